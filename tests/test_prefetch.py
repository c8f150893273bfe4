"""`Backfill.prefetch`: the next chunk is read and transformed on a second connection while the
current one is written. The commits, and so the checkpoints, stay exactly as without it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from backfills import Outcome
from backfills.engine.runner import Runner, RunOptions
from backfills.events import ChunkCommitted, Event, Retrying
from backfills.models import BackfillRun, QuarantinedRow
from backfills.registry import registry
from tests.conftest import LockHolder
from tests.testapp.backfills import PrefetchCountItems
from tests.testapp.kinds import WRITTEN, expected_values
from tests.testapp.models import Item, Record

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.prefetch_count_items"
prefetching_backends = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="prefetching needs a second connection's reads"
)


@pytest.fixture(autouse=True)
def no_chunk_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PrefetchCountItems, "chunk_delay", 0.0)
    monkeypatch.setattr(PrefetchCountItems, "threads", Counter())


def make_items(n: int, **fields: Any) -> None:
    Item.objects.bulk_create([Item(**fields) for _ in range(n)], batch_size=1000)


def run(name: str = NAME, **options: Any) -> tuple[Runner, Any]:
    runner = Runner(registry.get(name), options=RunOptions(**options))
    return runner, runner.run()


def counters() -> Counter[int]:
    return Counter(Item.objects.values_list("counter", flat=True))


@prefetching_backends
def test_every_chunk_after_the_first_is_read_ahead_and_every_row_counted_once() -> None:
    make_items(1000)

    runner, result = run()

    assert result.outcome is Outcome.COMPLETED
    assert counters() == {1: 1000}
    assert result.run.chunks_done == 20
    # The first chunk is read in the loop; each later one was prepared by the worker.
    assert runner.prefetched_chunks == 19
    assert PrefetchCountItems.threads == {"MainThread": 50, "backfills-prefetch": 950}


@prefetching_backends
def test_a_limited_run_does_not_write_the_chunk_it_read_ahead() -> None:
    make_items(300)

    runner, result = run(limit=120)

    assert result.outcome is Outcome.PAUSED
    assert runner.prefetched_chunks == 2  # 50 read in the loop, then 50 and 20 read ahead
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    assert not Item.objects.filter(pk__lte=pks[119]).exclude(counter=1).exists()
    assert not Item.objects.filter(pk__gt=pks[119]).exclude(counter=0).exists()
    assert BackfillRun.objects.get().cursor == str(pks[119])

    _, result = run()

    assert result.outcome is Outcome.COMPLETED
    assert counters() == {1: 300}


@prefetching_backends
def test_a_row_failing_in_the_worker_is_quarantined_by_the_runner() -> None:
    make_items(200)
    bad = list(Item.objects.order_by("pk").values_list("pk", flat=True))[130]
    Item.objects.filter(pk=bad).update(note="boom")

    runner, result = run("testapp.prefetch_quarantine_items")

    assert result.outcome is Outcome.COMPLETED
    assert (result.run.rows_processed, result.run.rows_failed) == (199, 1)
    assert [q.row_pk for q in QuarantinedRow.objects.all()] == [str(bad)]
    assert Item.objects.get(pk=bad).counter == 0
    assert counters() == {1: 199, 0: 1}
    # The failing chunk was done by the runner itself; the ones around it were read ahead.
    assert runner.prefetched_chunks == 2


def test_inside_an_enclosing_transaction_nothing_is_read_ahead() -> None:
    make_items(200)

    with transaction.atomic():
        # Uncommitted: a second connection would still read counter = 0 and write 1.
        Item.objects.update(counter=5)
        runner, result = run()

    assert result.outcome is Outcome.COMPLETED
    assert runner.prefetched_chunks == 0
    assert counters() == {6: 200}


@prefetching_backends
def test_statements_built_ahead_write_every_field_type_exactly() -> None:
    Record.objects.bulk_create(
        [Record(untouched="keep me", data={"seed": [1, "a"]}) for _ in range(40)]
    )

    runner, result = run("testapp.fill_records_prefetching")  # 7 rows a chunk

    assert result.outcome is Outcome.COMPLETED
    assert result.run.chunks_done == 6
    assert runner.prefetched_chunks == 5
    for record in Record.objects.order_by("pk"):
        assert {name: getattr(record, name) for name in WRITTEN} == expected_values(record.pk)
        assert record.done and record.untouched == "keep me"


@prefetching_backends
def test_a_chunk_read_ahead_too_long_ago_is_read_again(settings: Any) -> None:
    settings.BACKFILLS = {**getattr(settings, "BACKFILLS", {}), "PREFETCH_MAX_AGE": 0.0}
    make_items(300)

    runner, result = run()

    assert result.outcome is Outcome.COMPLETED
    assert runner.prefetched_chunks == 0
    assert counters() == {1: 300}


@prefetching_backends
def test_a_retried_chunk_is_read_again_not_written_from_the_rows_read_ahead(
    settings: Any,
) -> None:
    # Long enough that no chunk read ahead is dropped for its age while the lock is waited on.
    settings.BACKFILLS = {**settings.BACKFILLS, "PREFETCH_MAX_AGE": 30.0}
    make_items(300)
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    holder = LockHolder(pks[120])  # in the third chunk of 50, which the worker reads ahead
    holder.hold()
    # The application's update of that row, committed only after the backfill's write of the
    # row (computed from counter = 0, read ahead) has timed out on its lock.
    holder.other.cursor().execute("UPDATE testapp_item SET counter = 10 WHERE id = %s", [pks[120]])
    retries: list[Retrying] = []

    def commit_on_retry(event: Event) -> None:
        if isinstance(event, Retrying):
            retries.append(event)
            if holder.held:
                holder.other.commit()
                holder.other.set_autocommit(True)
                holder.held = False

    runner = Runner(registry.get(NAME), options=RunOptions(), listeners=[commit_on_retry])
    try:
        result = runner.run()
    finally:
        holder.close()

    assert result.outcome is Outcome.COMPLETED
    assert len(retries) == 1
    # Written from the rows read ahead, the row would be back at 1: the update lost.
    assert counters() == {1: 299, 11: 1}
    assert Item.objects.get(pk=pks[120]).counter == 11
    # Every chunk after the first came from the worker; the third was then read and
    # transformed again by the runner for its retry.
    assert PrefetchCountItems.threads == {"MainThread": 100, "backfills-prefetch": 250}
    assert runner.prefetched_chunks == 5


@prefetching_backends
def test_a_chunk_read_ahead_larger_than_the_new_batch_size_is_not_used(settings: Any) -> None:
    # Poll for the new size before every chunk; no chunk read ahead is dropped for its age.
    settings.BACKFILLS = {
        **settings.BACKFILLS,
        "CONTROL_POLL_SECONDS": 0,
        "PREFETCH_MAX_AGE": 30.0,
    }
    make_items(300)
    sizes: list[int] = []

    def shrink_after_the_second_chunk(event: Event) -> None:
        if isinstance(event, ChunkCommitted):
            sizes.append(event.window_size)
            if len(sizes) == 2:  # the worker is reading the third chunk, 50 rows, by now
                version = F("settings_version") + 1
                BackfillRun.objects.update(batch_size=20, settings_version=version)

    runner = Runner(
        registry.get(NAME), options=RunOptions(), listeners=[shrink_after_the_second_chunk]
    )
    result = runner.run()

    assert result.outcome is Outcome.COMPLETED
    assert counters() == {1: 300}
    assert sizes == [50, 50] + [20] * 10
    # The 50 rows read ahead for the third chunk were dropped and 20 read in the loop; the
    # second chunk and every one after the third came from the worker.
    assert runner.prefetched_chunks == 10
    assert PrefetchCountItems.threads == {"MainThread": 70, "backfills-prefetch": 280}
