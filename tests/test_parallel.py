"""Parallel runs: partitions claimed by several real worker processes, exactly once.

Every test here starts real ``python -m django backfill ...`` processes on the test database
(the parent of ``run --workers N`` starts its workers as its own children) and checks, at the
end, that every row was counted exactly once and that the run's figures are the sums of its
partitions'. SQLite has one writer: only ``--workers 1`` runs there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.db import connection

from backfills.models import BackfillPartition, BackfillRun
from tests.conftest import (
    ROOT,
    LockHolder,
    child_env,
    manage,
    wait_for,
    wait_until_killed_sessions_end,
)
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.chaos_count_items"  # 50 rows a chunk, each held open ~30 ms
#: The counters a partition adds to and its run sums (time_running is a float: compared apart).
COUNTERS = ("rows_scanned", "rows_processed", "rows_failed", "chunks_done")
SEED = int(os.environ.get("CHAOS_SEED", "12345"))
LEASE_LOST = "was taken over by another worker; this worker stopped without committing"

multi_writer = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite has one writer: parallel runs need 1 worker"
)


# -- processes -------------------------------------------------------------------------------


class Processes:
    """Real ``python -m django`` processes, their output in files (a worker inherits its
    parent's stderr: a pipe would block it, or block the reader until every orphan exits), and
    every worker process seen, so that teardown kills what is left, orphans included."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[str]] = []
        self.seen: dict[int, psutil.Process] = {}

    def start(
        self, args: list[str], settings: str = "tests.settings", *, new_session: bool = False
    ) -> subprocess.Popen[str]:
        n = len(self.started)
        out = open(self.tmp / f"{n}.out", "w")  # noqa: SIM115 - closed with the process
        err = open(self.tmp / f"{n}.err", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "django", *args],
            cwd=ROOT,
            env=child_env(DJANGO_SETTINGS_MODULE=settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            # Its own process group, as a shell gives a foreground job: the test can then
            # signal the group the way a terminal's Ctrl-C does.
            start_new_session=new_session,
        )
        out.close()
        err.close()
        process.args_n = n  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def output(self, process: subprocess.Popen[str]) -> tuple[str, str]:
        n = process.args_n  # type: ignore[attr-defined]
        return (self.tmp / f"{n}.out").read_text(), (self.tmp / f"{n}.err").read_text()

    def wait(self, process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            out, err = self.output(process)
            pytest.fail(f"{process.args} still running after {timeout}s:\n{out}\n{err}")
        return (code, *self.output(process))

    def workers(self, parent: subprocess.Popen[str] | None = None) -> list[psutil.Process]:
        """The live worker processes: *parent*'s worker children, and every one seen before
        (a killed parent's orphans go on working)."""
        if parent is not None and parent.poll() is None:
            try:
                for child in psutil.Process(parent.pid).children():
                    if "worker" in child.cmdline():
                        self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
        return [p for p in self.seen.values() if _alive(p)]

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        for worker in self.seen.values():
            if _alive(worker):
                with _gone():
                    worker.kill()
                with _gone():
                    worker.wait(10)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _gone:
    """Ignore a process that ended meanwhile."""

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, psutil.NoSuchProcess | ProcessLookupError)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        for worker in processes.seen.values():  # stopped ones cannot die of SIGKILL's default
            if _alive(worker):
                with _gone():
                    worker.resume()
        processes.kill_all()


# -- the database ----------------------------------------------------------------------------


def seed(rows: int) -> None:
    Item.objects.bulk_create((Item() for _ in range(rows)), batch_size=5000)


def histogram() -> Counter[int]:
    return Counter(Item.objects.values_list("counter", flat=True))


def the_run() -> BackfillRun | None:
    return BackfillRun.objects.order_by("-id").first()


def partitions(run: BackfillRun | None = None) -> list[BackfillPartition]:
    run = run or the_run()
    return list(BackfillPartition.objects.filter(run=run).order_by("number"))


def chunks_committed() -> int:
    return sum(p.chunks_done for p in partitions()) if the_run() else 0


def _keys(p: BackfillPartition, above: str | None, upto: str | None) -> object:
    items = Item.objects.all()
    if above is not None:
        items = items.filter(pk__gt=int(above))
    if upto is not None:
        items = items.filter(pk__lte=int(upto))
    return items


def assert_partitions_tile_the_run(run: BackfillRun, parts: list[BackfillPartition]) -> None:
    """The partitions' key ranges follow each other without a gap or an overlap, up to the
    run's horizon, however often they were split."""
    ranges = sorted(
        ((p.lower, p.upper) for p in parts), key=lambda r: -1 if r[0] is None else int(r[0])
    )
    assert ranges[0][0] is None
    for (_, upper), (lower, _) in zip(ranges, ranges[1:], strict=False):
        assert lower == upper
    assert ranges[-1][1] == run.horizon


def assert_data_matches_partitions(run: BackfillRun) -> None:
    """With no worker alive: each partition's rows up to its cursor counted once, the rest not
    at all, and its counters say so (the chunk and its checkpoint committed together)."""
    parts = partitions(run)
    assert_partitions_tile_the_run(run, parts)
    for p in parts:
        done = _keys(p, p.lower, p.cursor) if p.cursor is not None else Item.objects.none()
        assert not done.exclude(counter=1).exists(), p  # type: ignore[attr-defined]
        assert done.count() == p.rows_scanned == p.rows_processed, p  # type: ignore[attr-defined]
        rest = _keys(p, p.cursor if p.cursor is not None else p.lower, p.upper)
        assert not rest.exclude(counter=0).exists(), p  # type: ignore[attr-defined]
    assert sum(p.rows_processed for p in parts) == histogram()[1]


def assert_completed_exactly_once(rows: int) -> BackfillRun:
    """Every row counted once, the run completed with exact figures, equal to the sums of its
    partitions, all of them done and tiling the key range."""
    assert histogram() == Counter({1: rows})
    assert BackfillRun.objects.count() == 1
    run = the_run()
    assert run is not None
    assert run.state == "completed", (run.state, run.status_reason, run.error_message)
    assert run.rows_scanned == run.rows_processed == rows
    assert run.rows_failed == 0
    parts = partitions(run)
    assert {p.state for p in parts} == {"done"}
    assert all(p.owner_token is None for p in parts)
    for name in COUNTERS:
        assert sum(getattr(p, name) for p in parts) == getattr(run, name), name
    assert abs(sum(p.time_running for p in parts) - run.time_running) < 1e-6
    assert_partitions_tile_the_run(run, parts)
    return run


def run_workers(workers: int) -> list[str]:
    return ["backfill", "run", NAME, "--workers", str(workers), "--progress", "plain"]


# -- the tests -------------------------------------------------------------------------------


@multi_writer
def test_four_local_workers_count_every_row_once() -> None:
    seed(4000)
    code, out, err = manage(run_workers(4), "tests")
    assert code == 0, err
    run = assert_completed_exactly_once(4000)
    assert run.workers == 4
    parts = partitions(run)
    assert len(parts) >= 16
    # Every partition was walked by some worker process, and more than one took part.
    assert len({p.owner_pid for p in parts}) > 1
    assert "Completed run #" in out


@multi_writer
def test_a_worker_delivered_twice_does_nothing_twice(procs: Processes) -> None:
    """Two ``backfill worker --run ID`` started at once for the same run (a task delivered
    twice), beside the parent's own workers: they share the partitions, none is walked
    twice."""
    rows = 12_000
    seed(rows)
    parent = procs.start(run_workers(2))
    wait_for(lambda: chunks_committed() > 0, timeout=30)
    run = the_run()
    assert run is not None
    worker = ["backfill", "worker", "--run", str(run.pk), "--exit-when-idle", "--idle-poll", "0.1"]
    twins = [procs.start(worker), procs.start(worker)]
    for twin in twins:
        code, out, err = procs.wait(twin)
        assert code == 0, err
        assert "Worker done (no partition left to walk)" in out, out
        # Each one walked partitions of its own: a duplicate costs time, never correctness.
        assert "claimed partition" in out, out
    code, out, err = procs.wait(parent)
    assert code == 0, err
    run = assert_completed_exactly_once(rows)
    owners = {p.owner_pid for p in partitions(run)}
    assert {twin.pid for twin in twins} <= owners


def _db_session_in_chunk(pid: int, seen: list[object]) -> bool:
    """Whether worker *pid* is stopped inside a chunk: its transaction has written rows of the
    table and not yet its partition's checkpoint. What was seen goes to *seen*."""
    ports = [
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == int(connection.settings_dict.get("PORT") or 0)
    ]
    seen.append(ports)
    if not ports:
        return False
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT l.relation::regclass::text FROM pg_stat_activity a JOIN pg_locks l "
                "ON l.pid = a.pid WHERE a.client_port = ANY(%s) AND l.mode = 'RowExclusiveLock' "
                "AND l.relation IS NOT NULL",
                [ports],
            )
            tables = {row[0] for row in cursor.fetchall()}
            seen.append(tables)
            return "testapp_item" in tables and "backfills_backfillpartition" not in tables
        # Rows of one table written (the chunk's; a claim or a split writes a partition and
        # locks the run row too, a checkpoint locks a second table).
        cursor.execute(
            "SELECT t.trx_rows_modified, t.trx_tables_locked FROM information_schema.INNODB_TRX t "
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            f"WHERE p.HOST IN ({', '.join(['%s'] * 2 * len(ports))})",
            [f"{host}:{port}" for port in ports for host in ("127.0.0.1", "localhost")],
        )
        row = cursor.fetchone()
        seen.append(row)
        return bool(row and row[0] >= 2 and row[1] == 1)


@multi_writer
def test_a_worker_stopped_past_its_lease_cannot_commit_its_open_chunk(
    procs: Processes,
) -> None:
    """SIGSTOP a worker inside a chunk (its rows written, its checkpoint not), wait until
    another worker takes its partition over after the lease, SIGCONT it: its checkpoint is
    fenced off by the generation, the chunk rolls back (LeaseLost), nothing is done twice."""
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(3), settings="tests.settings_short_lease")
    wait_for(lambda: len(procs.workers(parent)) == 3 and chunks_committed() > 3, timeout=30)
    victim = procs.workers(parent)[0]
    taken = None
    seen: list[object] = []
    rng = random.Random(SEED)
    for _attempt in range(30):
        wait_for(
            lambda: BackfillPartition.objects.filter(
                owner_pid=victim.pid, state="running", chunks_done__gt=0
            ).exists(),
            timeout=30,
        )
        victim.suspend()
        partition = BackfillPartition.objects.filter(owner_pid=victim.pid, state="running").first()
        seen.append(partition)
        if partition is None or not _db_session_in_chunk(victim.pid, seen):
            victim.resume()
            # Let it run on a while: it may be between chunks, or waiting to retry one.
            time.sleep(rng.uniform(0.05, 0.3))
            continue
        # Past the lease (1.5 s), another worker takes the partition over: a new generation
        # (once the pending partitions are claimed: they come first).
        try:
            wait_for(
                lambda p=partition: BackfillPartition.objects.filter(
                    pk=p.pk, generation__gt=p.generation
                ).exists(),
                timeout=40,
            )
        except AssertionError:
            # Nobody could take it (e.g. the partition row itself was locked): again.
            seen.append("no takeover")
            victim.resume()
            continue
        taken = partition
        victim.resume()
        break
    assert taken is not None, f"never caught the worker inside a chunk: {seen}"
    code, out, err = procs.wait(parent)
    assert code == 0, err
    assert LEASE_LOST in err, err
    run = assert_completed_exactly_once(rows)
    after = BackfillPartition.objects.get(pk=taken.pk)
    assert after.generation > taken.generation
    assert run.rows_scanned == rows


@multi_writer
def test_pause_set_and_resume_from_another_process(procs: Processes) -> None:
    """With 4 workers running: ``set --batch-size`` reaches every worker, ``pause`` makes
    every one hand its partition back and nothing commits after, ``resume`` finishes it,
    every row once."""
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(4))
    wait_for(lambda: len(procs.workers(parent)) == 4 and chunks_committed() >= 8, timeout=30)
    pids = {p.pid for p in procs.workers(parent)}

    code, out, err = manage(["backfill", "set", NAME, "--batch-size", "20"], "tests")
    assert code == 0, err
    changed = time.time()

    def every_worker_at_20() -> bool:
        fresh = BackfillPartition.objects.filter(owner_pid__in=pids, last_chunk_size=20)
        return {p.owner_pid for p in fresh if p.updated_at.timestamp() > changed} == pids

    wait_for(every_worker_at_20, timeout=20)
    # From then on no worker cuts a chunk of the old size (a partition's last chunk may be
    # smaller: the rest up to its bound).
    assert not BackfillPartition.objects.filter(state="running", last_chunk_size__gt=20).exists()

    code, out, err = manage(["backfill", "pause", NAME], "tests")
    assert code == 0, err
    assert "is now paused" in out, out
    paused_at = {p.pk: p.chunks_done for p in partitions()}
    # Every worker hands back at its next chunk boundary (poll: 0.1 s), then exits.
    wait_for(lambda: not BackfillPartition.objects.filter(state="running").exists(), timeout=10)
    late = {p.pk: p.chunks_done - paused_at.get(p.pk, 0) for p in partitions()}
    # A chunk or two in flight, never a walk on: each worker polls every 0.1 s (~3 chunks).
    assert max(late.values()) <= 5, late
    code, out, err = procs.wait(parent, timeout=30)
    assert code == 0, err
    assert not procs.workers()
    run = the_run()
    assert run is not None and run.state == "paused"
    figures = [(p.pk, p.chunks_done, p.cursor) for p in partitions(run)]
    time.sleep(1)
    assert [(p.pk, p.chunks_done, p.cursor) for p in partitions(run)] == figures
    wait_until_killed_sessions_end()
    assert_data_matches_partitions(run)
    assert 0 < histogram()[1] < rows, "the pause came too late to land mid-run"

    resumed = procs.start(["backfill", "resume", NAME, "--progress", "plain"])
    code, out, err = procs.wait(resumed)
    assert code == 0, err
    assert "Completed run #" in out, out
    run = assert_completed_exactly_once(rows)
    assert run.batch_size == 20


@multi_writer
def test_cancel_from_another_process_stops_every_worker(procs: Processes) -> None:
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(4))
    wait_for(lambda: len(procs.workers(parent)) == 4 and chunks_committed() >= 8, timeout=30)
    code, out, err = manage(["backfill", "cancel", NAME, "--no-input"], "tests")
    assert code == 0, err
    assert "is now cancelled" in out, out
    wait_for(lambda: not BackfillPartition.objects.filter(state="running").exists(), timeout=10)
    code, out, err = procs.wait(parent, timeout=30)
    assert code == 0, err
    assert not procs.workers()
    run = the_run()
    assert run is not None and run.state == "cancelled"
    figures = [(p.pk, p.chunks_done, p.cursor) for p in partitions(run)]
    time.sleep(1)
    assert [(p.pk, p.chunks_done, p.cursor) for p in partitions(run)] == figures
    assert_data_matches_partitions(run)
    assert 0 < histogram()[1] < rows
    # A cancelled run is final: running the backfill again does not walk it on.
    code, out, err = manage(run_workers(4), "tests")
    assert code == 1
    assert "was cancelled; pass --restart to start a new run" in err, err
    assert [(p.pk, p.chunks_done, p.cursor) for p in partitions(run)] == figures


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
def test_sqlite_refuses_more_than_one_worker() -> None:
    seed(500)
    code, out, err = manage(run_workers(2), "tests")
    assert code != 0
    assert "Traceback" not in err
    assert "has one writer at a time" in err and "--workers 1" in err, err
    assert histogram() == Counter({0: 500})


def test_one_worker_completes_on_every_database() -> None:
    seed(2000)
    code, out, err = manage(run_workers(1), "tests")
    assert code == 0, err
    assert "Completed run #" in out
    run = assert_completed_exactly_once(2000)
    assert run.workers == 1


@multi_writer
def test_idle_workers_split_the_partition_with_the_most_rows_left(procs: Processes) -> None:
    """Keys 1..4000 and one far away: the first of the planned partitions holds nearly every
    row. The workers done with the empty ones ask its owner to split, and take the far halves
    over, again and again."""
    dense = 4000
    Item.objects.bulk_create((Item(pk=pk) for pk in range(1, dense + 1)), batch_size=5000)
    Item.objects.create(pk=1_000_000)
    rows = dense + 1
    code, out, err = manage(run_workers(4), "tests")
    assert code == 0, err
    run = assert_completed_exactly_once(rows)
    parts = partitions(run)
    planned = [p for p in parts if p.number < 16]
    added = [p for p in parts if p.number >= 16]
    assert len(planned) == 16
    # The only planned partition with rows was split (its key range halved, empty halves
    # first, until the halves held rows): partitions added by splits walked a good share.
    assert added, "no partition was split"
    assert all(p.lower is not None and int(p.lower) < 62_500 for p in added)
    assert sum(p.rows_scanned for p in added) > dense // 10
    # ... some by other workers than the one that walked the first.
    first = parts[0]
    assert any(p.rows_scanned and p.owner_pid != first.owner_pid for p in added)


@multi_writer
def test_sigterm_to_the_parent_pauses_the_run_and_run_again_finishes(procs: Processes) -> None:
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(4))
    wait_for(lambda: len(procs.workers(parent)) == 4 and chunks_committed() >= 8, timeout=30)
    workers = procs.workers(parent)
    parent.send_signal(signal.SIGTERM)
    code, out, err = procs.wait(parent, timeout=30)
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM received: pausing the run" in err, err
    wait_for(lambda: not any(_alive(w) for w in workers), timeout=10)
    run = the_run()
    assert run is not None
    assert (run.state, run.status_reason) == ("paused", "interrupted by SIGTERM")
    assert not BackfillPartition.objects.filter(state="running").exists()
    wait_until_killed_sessions_end()
    assert_data_matches_partitions(run)
    assert 0 < histogram()[1] < rows

    code, out, err = manage(["backfill", "run", NAME, "--progress", "plain"], "tests")
    assert code == 0, err
    assert "Completed run #" in out, out
    assert_completed_exactly_once(rows)


@multi_writer
def test_ctrl_c_in_a_terminal_pauses_gracefully_without_aborting_the_workers_chunks(
    procs: Processes,
) -> None:
    """A terminal sends SIGINT to its whole foreground process group. The workers are not in
    it: they get one SIGTERM from the parent and finish their chunks (a SIGINT and then a
    SIGTERM would count as a second signal and abort them)."""
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(2), new_session=True)
    wait_for(lambda: len(procs.workers(parent)) == 2 and chunks_committed() >= 6, timeout=30)
    workers = procs.workers(parent)
    os.killpg(parent.pid, signal.SIGINT)
    code, out, err = procs.wait(parent, timeout=30)
    assert code == 128 + signal.SIGINT, err
    assert "Aborted" not in err, err
    wait_for(lambda: not any(_alive(w) for w in workers), timeout=10)
    run = the_run()
    assert run is not None
    assert (run.state, run.status_reason) == ("paused", "interrupted by SIGINT")
    assert f"Paused run #{run.pk} of {NAME} at its partitions' checkpoints" in out, out
    wait_until_killed_sessions_end()
    assert_data_matches_partitions(run)


@multi_writer
def test_two_parents_started_at_once_share_one_run(procs: Processes) -> None:
    """`run --workers 2` delivered twice at the same moment: one run, one set of partitions,
    every row once."""
    rows = 8000
    seed(rows)
    parents = [procs.start(run_workers(2)), procs.start(run_workers(2))]
    results = [procs.wait(parent) for parent in parents]
    for code, _out, err in results:
        assert code == 0, err
    run = assert_completed_exactly_once(rows)
    assert len([p for p in partitions(run) if p.number < 8]) == 8


@multi_writer
def test_a_lock_held_on_the_run_row_only_delays_the_workers(procs: Processes) -> None:
    """Every worker writes the run row now and then (claims, roll-ups, health turns): a
    session holding its lock for a few seconds makes them wait or retry, never fails the run
    nor kills a worker."""
    rows = 20_000
    seed(rows)
    parent = procs.start(run_workers(4))
    wait_for(lambda: len(procs.workers(parent)) == 4 and chunks_committed() >= 8, timeout=30)
    run = the_run()
    assert run is not None
    holder = LockHolder(run.pk, table="backfills_backfillrun")
    try:
        # Longer than MariaDB's lock wait (1 s in a worker's session after its first chunk),
        # short enough that a run failed on it would be recorded failed right after.
        holder.hold()
        time.sleep(1.6)
    finally:
        holder.close()
    code, out, err = procs.wait(parent)
    assert code == 0, err
    assert "ended with status" not in err, err
    assert "Traceback" not in err, err
    assert_completed_exactly_once(rows)


def test_a_late_roll_up_never_takes_the_run_back() -> None:
    """Roll-ups read the partitions' sums, then write them: one that read before another
    may write after it. It must not put older (smaller) figures over newer ones."""
    from backfills import conf
    from backfills.engine.ledger import Ledger, Partitions
    from backfills.engine.parallel import start_parallel
    from backfills.registry import registry

    seed(500)
    run = start_parallel(registry.get(NAME), workers=1).run
    partitions_of = Partitions(Ledger("default", float(conf.get("LEASE_SECONDS"))))
    BackfillPartition.objects.filter(run=run).update(rows_scanned=50, chunks_done=1)
    partitions_of.roll_up(run)
    assert (run.rows_scanned, run.chunks_done) == (50 * len(partitions(run)), len(partitions(run)))
    # A newer roll-up saw more than the sums the late one read (and writes now).
    BackfillRun.objects.filter(pk=run.pk).update(rows_scanned=10_000, chunks_done=200)
    partitions_of.roll_up(run)
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert (fresh.rows_scanned, fresh.chunks_done) == (10_000, 200)
    assert (run.rows_scanned, run.chunks_done) == (10_000, 200)
