"""Chaos for parallel runs: `backfill run --workers 4` while its workers are killed with
SIGKILL at random moments, its parent too (once leaving the workers orphaned, once with all of
them, as a host crash would), and the same command started again each time the parent died.

Invariant 2 and 3 per partition: a chunk and its partition's checkpoint commit together, and a
dead worker's partition is taken over from that checkpoint, so at the end every row is counted
exactly once and the run's figures are the sums of its partitions'.

The kill moments come from a seeded ``random.Random``: set CHAOS_SEED to replay or vary them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import wait_for, wait_until_killed_sessions_end
from tests.test_parallel import (
    Processes,
    assert_completed_exactly_once,
    assert_data_matches_partitions,
    chunks_committed,
    multi_writer,
    procs,  # noqa: F401 - the fixture
    run_workers,
    seed,
    the_run,
)

pytestmark = [pytest.mark.django_db(transaction=True), multi_writer]

ROWS = 20_000
#: Chunks of 25 rows (800 of them, ~35 ms each): long enough a run for every kill to land.
BATCH = 25
WORKER_KILLS = 12
#: After this many worker kills, SIGKILL the parent alone (its workers go on, orphaned) ...
ORPHANING_KILL = 4
#: ... and after this many, the parent and every worker at once (a host crash).
CRASH_KILL = 8
SEED = int(os.environ.get("CHAOS_SEED", "12345"))


def kill_parent(processes: Processes, parent: subprocess.Popen[str]) -> list[psutil.Process]:
    """SIGKILL *parent*; return every live worker, its own included. Stopped first, so that
    no worker it starts in between goes unseen."""
    psutil.Process(parent.pid).suspend()
    workers = processes.workers(parent)
    parent.send_signal(signal.SIGKILL)
    assert parent.wait(10) == -signal.SIGKILL
    return workers


def test_workers_and_parent_killed_at_random_moments_count_every_row_once(
    procs: Processes,  # noqa: F811
) -> None:
    rng = random.Random(SEED)
    seed(ROWS)
    started = time.monotonic()
    command = [*run_workers(4), "--batch-size", str(BATCH)]
    parents = [procs.start(command)]
    kills: list[tuple[str, int]] = []  # (what, chunks committed when it landed)
    worker_kills = 0

    def parent_alive() -> bool:
        return parents[-1].poll() is None

    while worker_kills < WORKER_KILLS:
        # Let a live worker commit something since the last kill, then wait a random moment.
        before = chunks_committed()
        wait_for(lambda b=before: chunks_committed() > b or not parent_alive(), timeout=30)
        if not parent_alive():
            code, out, err = procs.wait(parents[-1])
            pytest.fail(f"the run ended before the kills did ({code}):\n{out}\n{err}")
        time.sleep(rng.uniform(0.0, 1.0))
        workers = procs.workers(parents[-1])
        if not workers:
            continue
        victim = rng.choice(sorted(workers, key=lambda p: p.pid))
        victim.send_signal(signal.SIGKILL)
        worker_kills += 1
        kills.append((f"worker {victim.pid}", chunks_committed()))

        if worker_kills == ORPHANING_KILL:
            parent = parents[-1]
            time.sleep(rng.uniform(0.0, 0.3))
            orphans = kill_parent(procs, parent)
            kills.append((f"parent {parent.pid} (its workers go on)", chunks_committed()))
            assert orphans, "no worker left to orphan"
            # The same command again joins the run its orphans are still walking.
            parents.append(procs.start(command))
            wait_for(lambda: len(procs.workers(parents[-1])) >= 4, timeout=30)
        elif worker_kills == CRASH_KILL:
            parent = parents[-1]
            time.sleep(rng.uniform(0.0, 0.3))
            for worker in kill_parent(procs, parent):
                worker.send_signal(signal.SIGKILL)
            wait_for(lambda: not procs.workers(), timeout=10)
            kills.append((f"parent {parent.pid} and every worker", chunks_committed()))
            wait_until_killed_sessions_end()
            run = the_run()
            assert run is not None
            assert run.state == "running", "the crash came too late to land mid-run"
            assert_data_matches_partitions(run)
            parents.append(procs.start(command))

    code, out, err = procs.wait(parents[-1], timeout=90)
    assert code == 0, err
    assert "Completed run #" in out or "already completed" in out, out
    wait_for(lambda: not procs.workers(), timeout=30)  # the orphans exit once idle
    wait_until_killed_sessions_end()
    elapsed = time.monotonic() - started
    run = assert_completed_exactly_once(ROWS)
    print(
        f"\nparallel chaos seed={SEED}: {worker_kills} worker kills, "
        f"{len(kills) - worker_kills} parent kills, {len(parents)} parents; chunks committed "
        f"at each kill {kills}; {run.chunks_done} chunks, {len(procs.seen)} worker processes, "
        f"{elapsed:.1f}s"
    )
    assert len([k for k in kills if k[0].startswith("parent")]) >= 2
