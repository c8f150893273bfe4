"""Transient errors are retried on a real database; hooks fire as Django signals."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection, connections

from backfills import Outcome, run_backfill
from backfills import signals as backfill_signals
from backfills.events import ChunkCommitted, Event, Retrying, Throttled
from backfills.exceptions import BackfillFailed
from backfills.models import BackfillRun
from tests.conftest import LockHolder
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def test_chunk_blocked_by_a_lock_fails_fast_is_retried_and_completes() -> None:
    Item.objects.bulk_create([Item() for _ in range(40)])
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    if connection.vendor == "sqlite":
        # SQLite's lock wait is the connection's busy timeout (20 s in settings): shorten it.
        connection.ensure_connection()
        connection.cursor().execute("PRAGMA busy_timeout = 300")
    holder = LockHolder(pks[15])  # inside the second window of 10
    waits: list[float] = []
    chunk_started = [time.monotonic()]

    def on_event(event: Event) -> None:
        if isinstance(event, ChunkCommitted):
            chunk_started[0] = time.monotonic()
            if event.run.chunks_done == 1:
                holder.hold()
        elif isinstance(event, Retrying):
            waits.append(time.monotonic() - chunk_started[0])
            holder.release()  # the lock goes away; the retry must then succeed

    try:
        result = run_backfill("testapp.count_items", listeners=[on_event])
    finally:
        holder.close()

    assert result.outcome is Outcome.COMPLETED
    assert len(waits) == 1
    # Failed on the lock timeout (0.5 s; MariaDB's minimum is 1 s), not after many seconds.
    assert waits[0] < 3
    assert BackfillRun.objects.get().retries == 1
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.parametrize("health_checks", [False, True])
def test_terminated_backend_reconnects_and_completes(settings: Any, health_checks: bool) -> None:
    if not health_checks:
        # No check queries the database between chunks: the chunk itself meets the dead
        # connection and is retried.
        settings.BACKFILLS = {
            **settings.BACKFILLS,
            "MAX_REPLICA_LAG": None,
            "MAX_MEMORY_PERCENT": None,
        }
    Item.objects.bulk_create([Item() for _ in range(50)])
    killed: list[int] = []
    events: list[Event] = []

    def terminate_after_second_chunk(event: Event) -> None:
        events.append(event)
        if isinstance(event, ChunkCommitted) and event.run.chunks_done == 2 and not killed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                killed.append(cursor.fetchone()[0])
            other = connections.create_connection("default")
            try:
                with other.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", killed)
            finally:
                other.close()

    result = run_backfill("testapp.count_items", listeners=[terminate_after_second_chunk])

    assert killed and result.outcome is Outcome.COMPLETED
    if health_checks:
        # The replica-lag check is the first to query the dead connection: it reports
        # "not now", the runner waits and reconnects.
        reasons = [e.reason for e in events if isinstance(e, Throttled)]
        assert reasons and "health check ReplicaLag failed: OperationalError" in reasons[0]
    else:
        assert BackfillRun.objects.get().retries >= 1
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


# On SQLite a held lock blocks every write, the failure record included (the run then waits
# for its lease to expire); with row locks the failure is recorded at once.
@pytest.mark.skipif("connection.vendor == 'sqlite'")
def test_retries_give_up_after_the_configured_attempts(settings: Any) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, "MAX_RETRIES": 2, "RETRY_BASE_DELAY": 0.01}
    Item.objects.bulk_create([Item() for _ in range(20)])
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    holder = LockHolder(pks[5])
    holder.hold()
    try:
        with pytest.raises(BackfillFailed, match="Lock|lock"):
            run_backfill("testapp.count_items")
    finally:
        holder.close()
    run = BackfillRun.objects.get()
    assert run.state == "failed" and run.error_class.endswith("OperationalError")
    # The first window timed out twice, was halved and got through without the locked row;
    # the next one, holding it, used up its retries.
    assert run.retries == 2 + 2 and run.chunks_done == 1 and run.rows_scanned == 5
    assert list(Item.objects.order_by("pk").values_list("counter", flat=True)) == [1] * 5 + [0] * 15


def test_lifecycle_signals_are_sent() -> None:
    Item.objects.bulk_create([Item() for _ in range(25)])
    seen: list[tuple[str, int]] = []

    def receiver(signal: Any, sender: Any, run: BackfillRun, **kwargs: Any) -> None:
        seen.append((signal_names[signal], run.chunks_done))

    signal_names = {
        backfill_signals.run_started: "started",
        backfill_signals.chunk_committed: "chunk",
        backfill_signals.run_paused: "paused",
        backfill_signals.run_completed: "completed",
    }
    for signal in signal_names:
        signal.connect(receiver)
    try:
        run_backfill("testapp.count_items", max_chunks=1)
        run_backfill("testapp.count_items")
    finally:
        for signal in signal_names:
            signal.disconnect(receiver)
    assert seen == [
        ("started", 0),
        ("chunk", 1),
        ("paused", 1),
        ("started", 1),
        ("chunk", 2),
        ("chunk", 3),
        ("completed", 3),
    ]
