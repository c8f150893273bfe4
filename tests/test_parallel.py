"""Parallel runs: partitions claimed by several real worker processes, exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import connection

from backfills.models import BackfillPartition, BackfillRun
from tests.conftest import manage
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.chaos_count_items"  # 50 rows a chunk, each held open ~30 ms

multi_writer = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite has one writer: parallel runs need 1 worker"
)


def seed(rows: int) -> None:
    Item.objects.bulk_create(Item() for _ in range(rows))


def histogram() -> Counter[int]:
    return Counter(Item.objects.values_list("counter", flat=True))


@multi_writer
def test_four_local_workers_count_every_row_once() -> None:
    seed(4000)
    code, out, err = manage(
        ["backfill", "run", NAME, "--workers", "4", "--progress", "plain"], "tests"
    )
    assert code == 0, err
    assert histogram() == Counter({1: 4000})
    run = BackfillRun.objects.get()
    assert run.state == "completed"
    assert run.workers == 4
    assert run.rows_scanned == run.rows_processed == 4000
    partitions = list(BackfillPartition.objects.filter(run=run))
    assert len(partitions) >= 16
    assert {p.state for p in partitions} == {"done"}
    assert sum(p.rows_scanned for p in partitions) == 4000
    assert sum(p.chunks_done for p in partitions) == run.chunks_done
    # Every partition was walked by some worker process, and more than one took part.
    assert len({p.owner_pid for p in partitions}) > 1
    assert "Completed run #" in out
