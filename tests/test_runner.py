"""The runner against a real database: keyset chunks, checkpoints, horizon, atomicity, leases."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from backfills import Outcome, run_backfill
from backfills.engine.owners import owner_alive, pid_alive
from backfills.events import ChunkCommitted, Event, RunStarted
from backfills.exceptions import BackfillFailed, LeaseLost, RunNotResumable, RunOwned
from backfills.models import BackfillRun
from tests.testapp.models import BigItem, CodeItem, Item, UUIDItem

pytestmark = pytest.mark.django_db(transaction=True)


def make_items(model: type[Any], n: int, **fields: Any) -> list[Any]:
    if model is UUIDItem:
        rows = [UUIDItem(id=uuid.uuid4(), **fields) for _ in range(n)]
    elif model is CodeItem:
        # Zero-padded and mixed-length codes: ordering is the database's, not Python's.
        rows = [CodeItem(code=f"c{i:05d}" if i % 3 else f"k{i}", **fields) for i in range(n)]
    else:
        rows = [model(**fields) for _ in range(n)]
    model.objects.bulk_create(rows)
    return list(model.objects.order_by("pk"))


def counters(model: type[Any]) -> list[int]:
    return list(model.objects.order_by("pk").values_list("counter", flat=True))


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (Item, "testapp.count_items"),
        (BigItem, "testapp.count_big_items"),
        (UUIDItem, "testapp.count_uuid_items"),
        (CodeItem, "testapp.count_code_items"),
    ],
)
def test_every_matching_row_processed_exactly_once(model: type[Any], name: str) -> None:
    make_items(model, 95)
    skipped = list(model.objects.order_by("pk").values_list("pk", flat=True)[5:95:7])
    model.objects.filter(pk__in=skipped).update(needs_work=False)
    recorder = Recorder()

    result = run_backfill(name, listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    rows = list(model.objects.values_list("pk", "counter", "needs_work"))
    assert {c for _, c, needs in rows if needs} == {1}
    assert {c for _, c, needs in rows if not needs} == {0}
    run = BackfillRun.objects.get()
    assert run.state == BackfillRun.State.COMPLETED
    assert run.chunks_done == 10  # 95 rows in windows of 10
    assert run.rows_scanned == 95 == run.rows_total
    assert run.rows_processed == 95 - len(skipped)
    assert run.active_key is None and run.owner_token is None
    assert [e.window_size for e in recorder.of(ChunkCommitted)] == [10] * 9 + [5]
    # The cursor round-trips through text for every key type.
    last_pk = model.objects.order_by("-pk").values_list("pk", flat=True)[0]
    assert run.cursor == str(last_pk)


def test_rows_inserted_above_the_horizon_are_not_chased() -> None:
    make_items(Item, 30)
    inserted: list[int] = []

    def insert_after_first_chunk(event: Event) -> None:
        if isinstance(event, ChunkCommitted) and not inserted:
            inserted.extend(i.pk for i in Item.objects.bulk_create([Item(), Item()]))
            if not inserted[0]:  # backends that don't return pks from bulk_create
                inserted[:] = list(Item.objects.order_by("-pk").values_list("pk", flat=True)[:2])

    result = run_backfill("testapp.count_items", listeners=[insert_after_first_chunk])

    assert result.outcome is Outcome.COMPLETED
    assert Item.objects.filter(pk__in=inserted).count() == 2
    assert set(Item.objects.filter(pk__in=inserted).values_list("counter", flat=True)) == {0}
    assert set(Item.objects.exclude(pk__in=inserted).values_list("counter", flat=True)) == {1}
    assert result.run.rows_scanned == 30


def test_error_in_third_chunk_keeps_two_committed_chunks_and_resumes_at_the_third() -> None:
    items = make_items(Item, 50)
    bad = items[24]  # in the third window of 10
    Item.objects.filter(pk=bad.pk).update(note="boom")

    with pytest.raises(BackfillFailed, match="chunk 3"):
        run_backfill("testapp.count_items")

    run = BackfillRun.objects.get()
    assert run.state == BackfillRun.State.FAILED
    assert run.chunks_done == 2
    assert run.cursor == str(items[19].pk)
    assert run.error_class == "builtins.ValueError"
    assert "note is 'boom'" in run.error_message
    assert "Traceback" in run.error_backtrace
    assert run.owner_token is None
    assert counters(Item) == [1] * 20 + [0] * 30  # chunk three rolled back entirely

    Item.objects.filter(pk=bad.pk).update(note="")
    recorder = Recorder()
    result = run_backfill("testapp.count_items", listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    assert recorder.of(RunStarted)[0].resumed is True
    assert counters(Item) == [1] * 50
    run.refresh_from_db()
    assert (run.chunks_done, run.rows_scanned, run.error_class) == (5, 50, "")


def test_partial_runs_resume_from_the_checkpoint() -> None:
    make_items(Item, 45)

    first = run_backfill("testapp.count_items", max_chunks=2)
    assert first.outcome is Outcome.PAUSED
    assert counters(Item) == [1] * 20 + [0] * 25
    second = run_backfill("testapp.count_items", limit=15, batch_size=10)
    assert second.outcome is Outcome.PAUSED
    assert counters(Item) == [1] * 35 + [0] * 10
    third = run_backfill("testapp.count_items")
    assert third.outcome is Outcome.COMPLETED
    assert counters(Item) == [1] * 45
    assert BackfillRun.objects.count() == 1

    again = run_backfill("testapp.count_items")
    assert again.outcome is Outcome.ALREADY_COMPLETED
    assert counters(Item) == [1] * 45

    fresh = run_backfill("testapp.count_items", restart=True)
    assert fresh.outcome is Outcome.COMPLETED
    assert counters(Item) == [2] * 45
    assert BackfillRun.objects.count() == 2


def test_cancelled_run_needs_an_explicit_restart() -> None:
    make_items(Item, 5)
    run_backfill("testapp.count_items", max_chunks=1, batch_size=2)
    BackfillRun.objects.update(state="cancelled", active_key=None)

    with pytest.raises(RunNotResumable, match="--restart"):
        run_backfill("testapp.count_items")
    assert run_backfill("testapp.count_items", restart=True).outcome is Outcome.COMPLETED


def test_empty_table_completes_at_once() -> None:
    result = run_backfill("testapp.count_items")
    assert result.outcome is Outcome.COMPLETED
    assert result.run.rows_total == 0 and result.run.chunks_done == 0


def _claimed_by(host: str, pid: int, heartbeat_age: float) -> BackfillRun:
    make_items(Item, 30)
    run_backfill("testapp.count_items", max_chunks=1)
    heartbeat = timezone.now() - timedelta(seconds=heartbeat_age)
    BackfillRun.objects.update(
        state="running",
        owner_token="someone-else",
        owner_host=host,
        owner_pid=pid,
        owned_since=heartbeat,
        heartbeat_at=heartbeat,
    )
    return BackfillRun.objects.get()


def test_a_live_owner_is_never_taken_over() -> None:
    _claimed_by("another-host", 4242, heartbeat_age=1)

    with pytest.raises(RunOwned, match=r"host another-host, pid 4242"):
        run_backfill("testapp.count_items")
    assert counters(Item) == [1] * 10 + [0] * 20
    assert BackfillRun.objects.get().owner_token == "someone-else"


def test_a_stale_lease_is_taken_over_from_the_checkpoint() -> None:
    _claimed_by("another-host", 4242, heartbeat_age=120)
    recorder = Recorder()

    result = run_backfill("testapp.count_items", listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    started = recorder.of(RunStarted)[0]
    assert started.resumed and started.took_over
    assert counters(Item) == [1] * 30


def test_a_dead_owner_on_this_host_is_taken_over_at_once() -> None:
    dead_pid = 2**22 + 12345
    while pid_alive(dead_pid):
        dead_pid += 1
    _claimed_by(socket.gethostname(), dead_pid, heartbeat_age=0)

    assert run_backfill("testapp.count_items").outcome is Outcome.COMPLETED
    assert counters(Item) == [1] * 30


def test_a_live_owner_on_this_host_is_not_taken_over() -> None:
    _claimed_by(socket.gethostname(), os.getppid(), heartbeat_age=0)
    with pytest.raises(RunOwned):
        run_backfill("testapp.count_items")


def test_a_live_pid_on_this_host_with_a_stale_heartbeat_has_lost_its_lease() -> None:
    run = _claimed_by(socket.gethostname(), os.getppid(), heartbeat_age=120)

    # A stopped process, or a reused pid: --restart (which asks owner_alive) goes ahead, as a
    # plain run's claim would.
    assert not owner_alive(run, 30.0)
    result = run_backfill("testapp.count_items", restart=True)

    assert result.outcome is Outcome.COMPLETED
    assert BackfillRun.objects.get(pk=run.pk).status_reason == "superseded by --restart"
    assert counters(Item) == [2] * 10 + [1] * 20  # the restart walked every row again


def test_force_takes_over_a_fresh_lease() -> None:
    _claimed_by("another-host", 4242, heartbeat_age=0)
    assert run_backfill("testapp.count_items", force=True).outcome is Outcome.COMPLETED
    assert counters(Item) == [1] * 30


def test_losing_the_lease_mid_run_rolls_back_the_open_chunk() -> None:
    make_items(Item, 30)

    def steal_after_first_chunk(event: Event) -> None:
        if isinstance(event, ChunkCommitted) and event.run.chunks_done == 1:
            BackfillRun.objects.update(owner_token="thief", heartbeat_at=timezone.now())

    with pytest.raises(LeaseLost):
        run_backfill("testapp.count_items", listeners=[steal_after_first_chunk])

    run = BackfillRun.objects.get()
    assert run.owner_token == "thief" and run.chunks_done == 1
    assert counters(Item) == [1] * 10 + [0] * 20


def test_checkpoint_and_chunk_share_the_transaction() -> None:
    """If the checkpoint cannot be written, the chunk's writes roll back with it."""
    make_items(Item, 10)
    table = BackfillRun._meta.db_table
    quoted = connection.ops.quote_name(table)
    run_backfill("testapp.count_items", max_chunks=1, batch_size=5)
    with connection.cursor() as cursor:
        # A real constraint violation on the checkpoint row, raised by the database itself.
        if connection.vendor == "sqlite":  # no ALTER TABLE ... ADD CONSTRAINT
            cursor.execute(
                f"CREATE TRIGGER chunks_cap BEFORE UPDATE ON {quoted} "
                "WHEN NEW.chunks_done >= 2 BEGIN SELECT RAISE(ABORT, 'chunks_cap'); END"
            )
        else:
            cursor.execute(
                f"ALTER TABLE {quoted} ADD CONSTRAINT chunks_cap CHECK (chunks_done < 2)"
            )
    try:
        with pytest.raises(BackfillFailed):
            run_backfill("testapp.count_items")
        assert counters(Item) == [1] * 5 + [0] * 5
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("DROP TRIGGER chunks_cap")
            else:
                cursor.execute(f"ALTER TABLE {quoted} DROP CONSTRAINT chunks_cap")


def test_restart_is_refused_while_a_live_process_owns_the_run() -> None:
    _claimed_by("another-host", 4242, heartbeat_age=1)

    with pytest.raises(RunOwned, match="host another-host, pid 4242"):
        run_backfill("testapp.count_items", restart=True)

    run = BackfillRun.objects.get()
    assert (run.state, run.owner_token) == ("running", "someone-else")
    assert counters(Item) == [1] * 10 + [0] * 20


def test_restart_supersedes_a_run_whose_owner_is_gone() -> None:
    _claimed_by("another-host", 4242, heartbeat_age=120)

    assert run_backfill("testapp.count_items", restart=True).outcome is Outcome.COMPLETED

    old, new = BackfillRun.objects.order_by("id")
    assert (old.state, old.status_reason, old.owner_token) == (
        "cancelled",
        "superseded by --restart",
        None,
    )
    assert new.state == "completed"
    assert counters(Item) == [2] * 10 + [1] * 20


def test_a_chunk_whose_commit_went_through_but_reported_an_error_is_not_done_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_items(Item, 30)
    real_commit = connection.commit
    failed: list[int] = []

    def commit_then_fail() -> None:
        real_commit()
        if not failed:
            failed.append(1)
            # Transient, as a connection lost right after sending COMMIT would be.
            raise OperationalError("database is locked")

    def arm(event: Event) -> None:
        if isinstance(event, RunStarted):  # the next commit is the first chunk's
            monkeypatch.setattr(connection, "commit", commit_then_fail)

    result = run_backfill("testapp.count_items", listeners=[arm])

    assert failed == [1]
    assert result.outcome is Outcome.COMPLETED
    assert counters(Item) == [1] * 30
    assert (result.run.chunks_done, result.run.rows_processed) == (3, 30)
