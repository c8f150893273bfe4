"""Partition planning and splitting on every kind of key, one in-process worker walking a
parallel run, and how status shows partitions."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, models

from backfills import control
from backfills.chunking import count_range, plan_partitions, split_point
from backfills.engine.parallel import start_parallel
from backfills.engine.workers import run_worker
from backfills.exceptions import BackfillConfigurationError
from backfills.models import BackfillPartition, BackfillRun
from backfills.registry import registry
from tests.testapp.models import CodeItem, Item, UUIDItem

pytestmark = pytest.mark.django_db(transaction=True)

USING = DEFAULT_DB_ALIAS


def covered(model: type[models.Model], ranges: list[tuple[Any, Any]]) -> list[int]:
    """Rows in each range; the ranges must be contiguous and ordered."""
    for (_, upper), (lower, _) in zip(ranges, ranges[1:], strict=False):
        assert upper == lower
    return [count_range(model, USING, lower, upper) for lower, upper in ranges]


def test_integer_keys_split_arithmetically_and_cover_every_row_once() -> None:
    Item.objects.bulk_create(Item() for _ in range(1000))
    horizon = Item.objects.order_by("-pk").first().pk  # type: ignore[union-attr]
    ranges = plan_partitions(Item, USING, horizon, 4, 1000)
    assert len(ranges) == 4
    assert ranges[0][0] is None and ranges[-1][1] == horizon
    assert covered(Item, ranges) == [250, 250, 250, 250]


def test_gaps_make_uneven_ranges_but_no_row_is_left_out() -> None:
    Item.objects.bulk_create([*(Item(id=i) for i in range(1, 101)), Item(id=100_000)])
    ranges = plan_partitions(Item, USING, 100_000, 4, 101)
    counts = covered(Item, ranges)
    assert sum(counts) == 101
    assert counts[0] == 100  # the dense start lands in the first range: splitting evens it out


def test_uuid_keys_split_on_the_128_bit_line() -> None:
    UUIDItem.objects.bulk_create(UUIDItem(id=uuid.uuid4()) for _ in range(800))
    horizon = UUIDItem.objects.order_by("-pk").first().pk  # type: ignore[union-attr]
    ranges = plan_partitions(UUIDItem, USING, horizon, 4, 800)
    counts = covered(UUIDItem, ranges)
    assert len(counts) == 4 and sum(counts) == 800
    assert min(counts) > 100  # random UUIDs spread evenly enough


def test_string_keys_are_stepped_on_the_index() -> None:
    CodeItem.objects.bulk_create(CodeItem(code=f"c{i:05d}") for i in range(1000))
    ranges = plan_partitions(CodeItem, USING, "c00999", 4, 1000)
    assert covered(CodeItem, ranges) == [250, 250, 250, 250]


def test_an_empty_table_has_no_partitions() -> None:
    assert plan_partitions(Item, USING, None, 4, 0) == []


def test_split_point_halves_the_remainder_or_declines() -> None:
    Item.objects.bulk_create(Item(id=i) for i in range(1, 101))
    assert split_point(Item, USING, None, 100) == 50
    assert split_point(Item, USING, 60, 100) == 80
    assert split_point(Item, USING, 99, 100) is None
    CodeItem.objects.bulk_create(CodeItem(code=f"c{i:03d}") for i in range(100))
    assert split_point(CodeItem, USING, "c009", "c099") == "c054"
    assert split_point(CodeItem, USING, "c098", "c099") is None


def test_one_worker_walks_a_parallel_run_to_completion_and_status_shows_partitions(
    run_command: Any,
) -> None:
    Item.objects.bulk_create(Item() for _ in range(300))
    backfill_cls = registry.get("testapp.count_items")
    opened = start_parallel(backfill_cls, workers=1)
    assert opened.how == "started"
    run = opened.run
    assert run.state == "running" and run.workers == 1 and run.owner_token is None
    planned = BackfillPartition.objects.filter(run=run).count()
    assert planned == 4

    out, _ = run_command("status", "testapp.count_items", verbosity=2)
    assert "parallel (1 worker asked" in out  # SQLite adds "at most 1 at once"
    assert "4 partitions, 0 done, 0 leased, 4 pending" in out
    assert "interrupted: no live worker holds a partition" in out
    assert f"Partitions of run #{run.pk}" in out

    result = run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05)
    assert result.completed_runs == [run.pk]
    assert result.rows == 300 and not result.work_left
    assert Counter(Item.objects.values_list("counter", flat=True)) == Counter({1: 300})
    run.refresh_from_db()
    assert run.state == "completed"
    assert run.rows_scanned == run.rows_processed == run.rows_total == 300
    assert run.chunks_done == 4 * 8  # 75 rows a partition, 10 a chunk: 7 full and 1 of 5

    out, _ = run_command("status", "testapp.count_items", "--json")
    (summary,) = json.loads(out)
    assert summary["workers"] == 1 and summary["state"] == "completed"
    assert [p["state"] for p in summary["partitions"]] == ["done"] * 4
    assert sum(p["rows_scanned"] for p in summary["partitions"]) == 300

    # Running it again finds it completed; a serial run of a parallel run is refused.
    assert start_parallel(backfill_cls, workers=1).how == "already completed"


def test_a_serial_runner_refuses_an_unfinished_parallel_run() -> None:
    from backfills import run_backfill
    from backfills.exceptions import RunNotResumable

    Item.objects.bulk_create(Item() for _ in range(30))
    start_parallel(registry.get("testapp.count_items"), workers=1)
    with pytest.raises(RunNotResumable, match="is a parallel run"):
        run_backfill("testapp.count_items")
    assert not Item.objects.filter(counter__gt=0).exists()


def test_pause_and_resume_a_parallel_run_through_the_api() -> None:
    Item.objects.bulk_create(Item() for _ in range(50))
    run = start_parallel(registry.get("testapp.count_items"), workers=1).run
    paused = control.pause("testapp.count_items")
    assert paused.action == "applied" and paused.run.state == "paused"
    # A worker finds nothing to claim while the run is paused.
    assert run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05).chunks == 0
    resumed = control.resume("testapp.count_items")
    assert resumed.action == "resumed"  # type: ignore[union-attr]
    assert run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05).rows == 50
    assert BackfillRun.objects.get(pk=run.pk).state == "completed"


@pytest.mark.skipif(
    "sqlite" not in __import__("django.db").db.connection.vendor, reason="SQLite only"
)
def test_sqlite_refuses_more_than_one_worker() -> None:
    with pytest.raises(BackfillConfigurationError, match="one writer at a time"):
        start_parallel(registry.get("testapp.count_items"), workers=2)
    assert not BackfillRun.objects.exists()


def _partitions() -> Any:
    from backfills.engine.ledger import Ledger, Partitions

    return Partitions(Ledger(USING, 30.0))


def test_max_workers_caps_the_partitions_leased_at_once_and_claims_bump_the_generation() -> None:
    from backfills.engine.owners import Owner

    Item.objects.bulk_create(Item() for _ in range(100))
    run = start_parallel(registry.get("testapp.count_items"), workers=1, max_workers=1).run
    partitions = _partitions()
    first = partitions.claim(Owner())
    assert first is not None and first.partition.generation == 1
    assert partitions.claim(Owner()) is None  # at max_workers
    first.release()
    again = partitions.claim(Owner(), [run.pk])
    assert again is not None
    assert again.partition.pk == first.partition.pk and again.partition.generation == 2


def test_a_worker_that_lost_its_partition_cannot_commit_a_chunk() -> None:
    """The fencing token: after a takeover, the old lease's checkpoint matches no row and
    its chunk rolls back."""
    from django.db import transaction

    from backfills.chunking import Window
    from backfills.engine.owners import Owner
    from backfills.exceptions import LeaseLost

    Item.objects.bulk_create(Item() for _ in range(40))
    start_parallel(registry.get("testapp.count_items"), workers=1)
    partitions = _partitions()
    old = partitions.claim(Owner())
    assert old is not None
    # Its heartbeat goes stale (as if the process were stopped), and another worker takes it
    # (the only one left to take: the others are walked).
    BackfillPartition.objects.exclude(pk=old.partition.pk).update(state="done")
    BackfillPartition.objects.filter(pk=old.partition.pk).update(heartbeat_at=None)
    new = partitions.claim(Owner())
    assert new is not None and new.partition.pk == old.partition.pk and new.took_over
    pk = Item.objects.order_by("pk").first().pk  # type: ignore[union-attr]
    with pytest.raises(LeaseLost), transaction.atomic():
        Item.objects.filter(pk=pk).update(counter=99)
        old.checkpoint(Window(None, pk, 1), str(pk), 1, 0, 0.01)
    assert Item.objects.get(pk=pk).counter == 0
    with pytest.raises(LeaseLost):
        old.heartbeat()
    new.checkpoint(Window(None, pk, 1), str(pk), 1, 0, 0.01)
    assert BackfillPartition.objects.get(pk=new.partition.pk).cursor == str(pk)


def test_one_worker_per_interval_asks_the_health_checks() -> None:
    Item.objects.bulk_create(Item() for _ in range(10))
    run = start_parallel(registry.get("testapp.count_items"), workers=1).run
    partitions = _partitions()
    assert partitions.take_health_turn(run, 60.0)
    assert not partitions.take_health_turn(run, 60.0)  # another worker, same interval
    partitions.record_health(run, "replica lag 3.0s > 1.0s")
    assert partitions.health(run) == "replica lag 3.0s > 1.0s"
    run.refresh_from_db()
    assert run.throttle_reason == "replica lag 3.0s > 1.0s"


def test_an_idle_worker_asks_the_biggest_remainder_to_split_and_its_owner_does() -> None:
    from backfills.engine.owners import Owner

    Item.objects.bulk_create(Item() for _ in range(400))
    run = start_parallel(registry.get("testapp.count_items"), workers=1).run
    partitions = _partitions()
    lease = partitions.claim(Owner())
    assert lease is not None
    # While other partitions wait to be claimed, an idle worker is only held back by
    # max_workers: no split.
    assert not partitions.request_split([run.pk], min_rows=10)
    BackfillPartition.objects.filter(run=run, state="pending").update(state="done")
    assert partitions.request_split([run.pk], min_rows=10)
    control_row = lease.poll()
    assert control_row.split_requested
    upper = lease.partition.upper
    new = lease.split(split_point(Item, USING, None, int(upper)))
    assert new is not None
    assert (new.lower, new.upper, new.state) == (lease.partition.upper, upper, "pending")
    assert int(lease.partition.upper) < int(upper)
    assert not lease.poll().split_requested
    ranges = [(p.lower, p.upper) for p in BackfillPartition.objects.filter(run=run)]
    rows = [count_range(Item, USING, lower and int(lower), int(up)) for lower, up in ranges]
    assert sum(rows) == 400 and len(ranges) == 5  # the ranges still cover every row once


def test_partial_run_options_are_refused_with_workers(run_command: Any) -> None:
    from django.core.management.base import CommandError

    Item.objects.bulk_create(Item() for _ in range(30))
    with pytest.raises(CommandError, match="--limit, --max-chunks apply to a run in this process"):
        run_command(
            "run", "testapp.count_items", "--workers", "1", "--limit", "5", "--max-chunks", "1"
        )
    with pytest.raises(CommandError, match="--max-workers and --enqueue go with --workers N"):
        run_command("run", "testapp.count_items", "--enqueue")
    assert not BackfillRun.objects.exists()
    assert not Item.objects.filter(counter__gt=0).exists()


def test_a_walked_run_left_uncompleted_counts_as_work_left_and_is_completed_later() -> None:
    """The worker that finished the last partition died before completing the run: a task
    that stops now must still enqueue another, and the next idle worker completes it."""
    Item.objects.bulk_create(Item() for _ in range(20))
    run = start_parallel(registry.get("testapp.count_items"), workers=1).run
    BackfillPartition.objects.filter(run=run).update(state="done")
    assert run_worker(run_ids=[run.pk], max_seconds=0.0).work_left
    assert BackfillRun.objects.get(pk=run.pk).state == "running"
    done = run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05)
    assert done.completed_runs == [run.pk] and not done.work_left


def test_a_post_check_that_raises_fails_the_run_instead_of_the_worker() -> None:
    from backfills.registry import register

    class RaisingCheck(registry.get("testapp.count_items")):  # type: ignore[misc]
        name = "testapp.raising_post_check"

        def post_check(self) -> str | None:
            raise RuntimeError("the check itself is broken")

    register(RaisingCheck)
    try:
        Item.objects.bulk_create(Item() for _ in range(20))
        run = start_parallel(RaisingCheck, workers=1).run
        result = run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05)
        assert result.rows == 20 and result.completed_runs == []
        run.refresh_from_db()
        assert run.state == "failed"
        assert "the check itself is broken" in run.error_message
    finally:
        registry.unregister(RaisingCheck.name)
