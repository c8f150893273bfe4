"""Chaos: a real `manage.py backfill run` killed at random moments, again and again.

Every kill leaves the database as the chunk transactions left it; after each one the data must
match the checkpoint (rows up to the cursor counted once, the rest not at all), and after a
final run every row must have been counted exactly once.

The kill moments come from a seeded ``random.Random``: set CHAOS_SEED to replay or vary them.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import models

from backfills.models import BackfillRun
from tests.conftest import manage, wait_for, wait_until_killed_sessions_end
from tests.testapp.models import Item, TenantItem, tenant_keys

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.chaos_count_items"  # 50 rows a chunk, each chunk held open ~30 ms
# The same with a row backfill reading each next chunk ahead on a second connection.
PREFETCH = "testapp.prefetch_count_items"
# Both on TenantItem: a composite primary key (tenant, number), the cursor stored as JSON.
COMPOSITE = "testapp.chaos_count_tenant_items"
COMPOSITE_PREFETCH = "testapp.prefetch_count_tenant_items"
ROWS = 20_000
BATCH = 50
#: Kills that land after the process claimed the run and committed a chunk.
MID_RUN_KILLS = 12
#: Share of extra kills at a random moment after spawning: during start-up, the claim or a chunk.
EARLY_SHARE = 0.25
SEED = int(os.environ.get("CHAOS_SEED", "12345"))


def latest_run() -> BackfillRun | None:
    return BackfillRun.objects.order_by("-id").first()


def working_or_ended(process: subprocess.Popen[str], chunks_before: int) -> bool:
    """*process* owns the run and has committed a chunk of its own, or it has exited."""
    if process.poll() is not None:
        return True
    run = latest_run()
    return run is not None and run.owner_pid == process.pid and run.chunks_done > chunks_before


@dataclass(frozen=True)
class Table:
    """The table a chaos run walks: how to fill it, and which rows a checkpoint covers."""

    model: type[models.Model]

    def seed(self) -> None:
        if self.model is TenantItem:
            rows: list[Any] = [TenantItem(tenant=t, number=n) for t, n in tenant_keys(ROWS)]
        else:
            rows = [Item() for _ in range(ROWS)]
        self.model._base_manager.bulk_create(rows, batch_size=2000)

    def key(self, cursor: str) -> Any:
        """The checkpoint *cursor* as a ``pk`` value: rows compare with it as the database
        orders the key (for the composite key, with Django's own tuple comparison)."""
        return tuple(json.loads(cursor)) if self.model is TenantItem else int(cursor)

    def histogram(self) -> Counter[int]:
        return Counter(self.model._base_manager.values_list("counter", flat=True))


TABLES = {
    NAME: Table(Item),
    PREFETCH: Table(Item),
    COMPOSITE: Table(TenantItem),
    COMPOSITE_PREFETCH: Table(TenantItem),
}


def assert_data_matches_checkpoint(table: Table, run: BackfillRun) -> None:
    """What the run row says is committed is exactly what the table holds."""
    assert run.rows_scanned == run.rows_processed == run.chunks_done * BATCH
    assert table.histogram() == +Counter({1: run.rows_processed, 0: ROWS - run.rows_processed})
    if run.cursor is not None:
        rows, cursor = table.model._base_manager, table.key(run.cursor)
        assert rows.filter(pk__lte=cursor).count() == run.rows_processed
        assert not rows.filter(pk__lte=cursor).exclude(counter=1).exists()
        assert not rows.filter(pk__gt=cursor).exclude(counter=0).exists()


def expected_start(previous: BackfillRun | None, sig: signal.Signals) -> str:
    if previous is None:
        return "Started run #"
    # After SIGKILL the dead owner still holds the lease; after SIGTERM it released it.
    if previous.owner_token:
        return f"Taking over run #{previous.pk} of {previous.name} from its checkpoint"
    return f"Resuming run #{previous.pk} of {previous.name} from its checkpoint"


@pytest.mark.parametrize(
    "name, sig",
    [
        (NAME, signal.SIGKILL),
        (NAME, signal.SIGTERM),
        (PREFETCH, signal.SIGKILL),
        (COMPOSITE, signal.SIGKILL),
        (COMPOSITE_PREFETCH, signal.SIGKILL),
    ],
    ids=[
        "SIGKILL",
        "SIGTERM",
        "prefetch-SIGKILL",
        # SIGTERM's path (finish the chunk, pause) does not depend on the key.
        "composite-SIGKILL",
        "composite-prefetch-SIGKILL",
    ],
)
def test_killed_at_random_moments_every_row_is_counted_exactly_once(
    name: str, sig: signal.Signals, spawn: Callable[[list[str]], subprocess.Popen[str]]
) -> None:
    seed = SEED + int(sig)
    rng = random.Random(seed)
    table = TABLES[name]
    table.seed()
    started = time.monotonic()
    mid_run_kills = early_kills = late_commits = 0
    kill_points: list[int] = []  # chunks committed when each kill landed
    early_landed: Counter[str] = Counter()  # where the early kills hit the process

    while mid_run_kills < MID_RUN_KILLS:
        before = latest_run()
        done_before = before.chunks_done if before else 0
        early = before is not None and rng.random() < EARLY_SHARE
        process = spawn(["backfill", "run", name, "--progress-interval", "0"])
        if early:
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            wait_for(functools.partial(working_or_ended, process, done_before))
            run = latest_run()
            assert run is not None
            assert run.owner_pid == process.pid
            time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended by itself ({process.returncode}):\n{out}\n{err}")
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
        seen = latest_run()
        wait_until_killed_sessions_end()
        run = latest_run()
        assert run is not None and seen is not None
        late_commits += run.chunks_done - seen.chunks_done
        kill_points.append(run.chunks_done)

        if sig == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
            # A kill -9 leaves the run `running`, owned by a dead pid on this host.
            assert run.state == "running"
            assert run.owner_token
            if not early:
                assert run.owner_pid == process.pid
            else:
                early_landed["after claim" if run.owner_pid == process.pid else "before claim"] += 1
        elif early and process.returncode == -signal.SIGTERM:
            # Killed during start-up, before the command installed its handlers: untouched.
            assert before is not None
            assert (run.state, run.chunks_done) == (before.state, before.chunks_done)
            early_landed["before the handlers"] += 1
        else:
            if early:
                early_landed["handled"] += 1
            assert process.returncode == 128 + signal.SIGTERM, err
            assert "SIGTERM received: stopping after the current chunk commits" in err
            assert run.state == "paused"
            assert run.status_reason == "interrupted by SIGTERM"
            assert run.owner_token is None
        if not early:
            assert expected_start(before, sig) in out, out
            assert run.chunks_done > done_before
            mid_run_kills += 1
        else:
            early_kills += 1
        assert run.chunks_done < ROWS // BATCH, "the kills came too late to land mid-run"
        assert_data_matches_checkpoint(table, run)

    before = latest_run()
    code, out, err = manage(
        ["backfill", "run", name, "--batch-size", "2000", "--progress-interval", "0"],
        project="tests",
    )
    elapsed = time.monotonic() - started

    assert code == 0, err
    assert expected_start(before, sig) in out
    assert f"Completed run #{before.pk} of {name}: {ROWS:,} rows walked, {ROWS:,} processed" in out
    run = latest_run()
    assert run is not None
    assert (run.state, run.rows_scanned, run.rows_processed) == ("completed", ROWS, ROWS)
    assert run.owner_token is None and run.active_key is None
    assert BackfillRun.objects.count() == 1
    final = table.histogram()
    kills = mid_run_kills + early_kills
    print(
        f"\nchaos {name} {sig.name} seed={seed}: {kills} kills ({mid_run_kills} mid-run, "
        f"{early_kills} at a random moment after spawning: {dict(early_landed)}), chunks "
        f"committed at each kill {kill_points} ({late_commits} committed by the server after "
        f"the client was seen dead), final counter histogram {dict(final)}, {elapsed:.1f}s"
    )
    assert kills >= 10
    assert mid_run_kills >= 10
    assert final == {1: ROWS}
