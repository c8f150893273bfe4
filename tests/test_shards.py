"""One command, one parallel run per database (`--database a --database b`), drained by the
same worker processes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connections

from backfills.models import BackfillPartition, BackfillRun
from tests.conftest import manage
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "shard"])

ROWS = {"default": 300, "shard": 200}


def test_one_run_per_database_and_the_same_workers_drain_both() -> None:
    for alias, rows in ROWS.items():
        Item.objects.using(alias).bulk_create(Item() for _ in range(rows))
    workers = "1" if connections["default"].vendor == "sqlite" else "2"
    code, out, err = manage(
        [
            "backfill",
            "run",
            "testapp.count_items",
            "--workers",
            workers,
            "--database",
            "default",
            "--database",
            "shard",
            "--progress",
            "plain",
        ],
        "tests",
    )
    assert code == 0, err
    pids: list[set[Any]] = []
    for alias, rows in ROWS.items():
        counters = Counter(Item.objects.using(alias).values_list("counter", flat=True))
        assert counters == Counter({1: rows}), alias
        run = BackfillRun.objects.using(alias).get()
        assert (run.state, run.rows_scanned, run.rows_processed) == ("completed", rows, rows)
        assert f"[{alias}] Completed run #{run.pk} of testapp.count_items" in out
        partitions = BackfillPartition.objects.using(alias).filter(run=run)
        assert {p.state for p in partitions} == {"done"}
        pids.append({p.owner_pid for p in partitions})
    # The same worker processes walked partitions of both databases.
    assert pids[0] & pids[1]


def test_only_run_and_worker_take_several_databases(run_command: Any) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="takes one --database"):
        run_command("status", "--database", "default", "--database", "shard")
    with pytest.raises(CommandError, match="Several --database need --workers N"):
        run_command("run", "testapp.count_items", "--database", "default", "--database", "shard")
    assert not BackfillRun.objects.using("shard").exists()
