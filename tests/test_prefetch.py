"""`Backfill.prefetch`: the next chunk is read and transformed on a second connection while the
current one is written. The commits, and so the checkpoints, stay exactly as without it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction

from backfills import Outcome
from backfills.models import BackfillRun, QuarantinedRow
from backfills.registry import registry
from backfills.runner import Runner, RunOptions
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
