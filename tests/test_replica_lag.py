"""Replica lag against real replicas: the PostgreSQL streaming replica and the MariaDB replica
that scripts/replicas.sh starts beside a primary. Skipped unless BACKFILLS_TEST_REPLICA_URL names
the replica of DATABASE_URL's server (.ci/run and `make replicas` say how).

Replay is held on the replica while a `backfill run` process writes on the primary. PostgreSQL:
``pg_wal_replay_pause()``. MariaDB: ``FLUSH TABLES WITH READ LOCK`` on the replica, which blocks
the SQL thread at the next event while ``Seconds_Behind_Master`` keeps counting; ``STOP SLAVE
SQL_THREAD`` turns it NULL, and the check then throttles on "reports no replication", without a
figure (the last test).

Lag is read two ways. "primary": PostgreSQL's ``pg_stat_replication.replay_lag``, on the
database the run writes to (MariaDB has nothing like it on a primary: skipped there). "replica":
the alias in ``REPLICA_DATABASES`` is asked (PostgreSQL's replay delay, MariaDB's
``Seconds_Behind_Master``); on PostgreSQL the primary is asked as well, and the worse one counts.

``replay_lag`` is computed when the standby reports back, which it does as WAL arrives (and
every ``wal_receiver_status_interval``, 10 s, otherwise). A throttled run writes only when its
reason changes, so on a primary nothing else writes to the figure it reads can stand still for
10 s: measured there, a run held at 4 s of lag went critical 12 s after the hold. The tests keep
the primary live, as an online backfill's primary is: the application commits a row every 0.1 s
(``traffic``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection, connections

from backfills.models import BackfillRun
from backfills.throttle import replica_delay
from tests.conftest import ROOT, child_env, wait_for
from tests.testapp.models import CodeItem, Item

if not os.environ.get("BACKFILLS_TEST_REPLICA_URL"):
    pytest.skip(
        "no replica: start them with scripts/replicas.sh start and set BACKFILLS_TEST_REPLICA_URL",
        allow_module_level=True,
    )

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

BACKFILL = "testapp.slow_count_items"  # chunks of 20 rows, about 50 ms each
# tests/settings_replica.py: health asked every 0.5 s (every 0.5 s while throttled, too),
# throttled from 1 s of lag.
HEALTH_CHECK_SECONDS = 0.5
MAX_LAG = 1.0
CRITICAL_LAG = 4.0
# What a process needs beyond the intervals above: a chunk, a poll of the run's row, the
# scheduler of a small CI machine.
SLACK = 1.5
LAG = r"lag (?P<lag>\d+\.\d)s >= "


# -- the replica ---------------------------------------------------------------------------


class Replay:
    """Holds and releases replay on the replica (through the test's "replica" connection)."""

    def __init__(self) -> None:
        self.replica = connections["replica"]
        self.held = ""

    def _execute(self, sql: str) -> None:
        with self.replica.cursor() as cursor:
            cursor.execute(sql)

    def hold(self) -> float:
        """Hold replay; return when (time.monotonic()) it was held."""
        if connection.vendor == "postgresql":
            self._execute("SELECT pg_wal_replay_pause()")
        else:
            self._execute("FLUSH TABLES WITH READ LOCK")
        self.held = "hold"
        return time.monotonic()

    def stop_sql_thread(self) -> float:
        self._execute("STOP SLAVE SQL_THREAD")
        self.held = "stop"
        return time.monotonic()

    def release(self) -> None:
        if self.held == "hold":
            if connection.vendor == "postgresql":
                self._execute("SELECT pg_wal_replay_resume()")
            else:
                self._execute("UNLOCK TABLES")
        elif self.held == "stop":
            self._execute("START SLAVE SQL_THREAD")
        self.held = ""

    def wait_until_caught_up(self) -> float:
        """Wait until the replica has replayed everything the primary has written so far;
        return when (time.monotonic())."""
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_current_wal_lsn()")
                (position,) = cursor.fetchone()
                sql = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
            else:
                cursor.execute("SELECT @@gtid_binlog_pos")
                (position,) = cursor.fetchone()
                sql = "SELECT @@gtid_slave_pos = %s"

        def caught_up() -> bool:
            with self.replica.cursor() as cursor:
                cursor.execute(sql, [position])
                return bool(cursor.fetchone()[0])

        wait_for(caught_up, timeout=30, interval=0.01)
        return time.monotonic()


@pytest.fixture
def replay() -> Iterator[Replay]:
    replay = Replay()
    replay.wait_until_caught_up()  # what an earlier test wrote does not count as lag here
    yield replay
    replay.release()
    replay.wait_until_caught_up()
    replay.replica.close()


class Traffic(threading.Thread):
    """The application: a row committed on the primary every 0.1 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            n = 0
            while not self.stopped.wait(0.1):
                n += 1
                CodeItem.objects.create(code=f"app-{n}")
        finally:
            connections.close_all()  # this thread's own


@pytest.fixture
def traffic() -> Iterator[Traffic]:
    thread = Traffic()
    thread.start()
    yield thread
    thread.stopped.set()
    thread.join(timeout=10)


# -- the run -------------------------------------------------------------------------------


def replica_url() -> str:
    """BACKFILLS_TEST_REPLICA_URL naming the test database (replicated from the primary)."""
    url = urlsplit(os.environ["BACKFILLS_TEST_REPLICA_URL"])
    return url._replace(path=f"/{connection.settings_dict['NAME']}").geturl()


class RunProcess:
    """`backfill run` in a real process with tests/settings_replica.py, its output in a file."""

    def __init__(self, output: Path, settings: dict[str, Any]) -> None:
        self.output = output
        env = child_env(
            DJANGO_SETTINGS_MODULE="tests.settings_replica",
            BACKFILLS_TEST_REPLICA_URL=replica_url(),
            BACKFILLS_TEST_REPLICA_SETTINGS=json.dumps(settings),
        )
        with output.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "backfill", "run", BACKFILL],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    @property
    def text(self) -> str:
        return self.output.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.text}") from None


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[..., RunProcess]]:
    runs: list[RunProcess] = []

    def start(where: str, critical: float | None = None) -> RunProcess:
        settings = {
            "REPLICA_DATABASES": ["replica"] if where == "replica" else [],
            "CRITICAL_REPLICA_LAG": critical,
        }
        runs.append(RunProcess(tmp_path / f"run-{len(runs)}.txt", settings))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def measured(where: str) -> str:
    """The name a lag reason gives the measurement; skips where there is none."""
    if where == "replica":
        if connection.vendor == "postgresql":
            # The primary's replay_lag is asked too: either may be the worse.
            return r"(replica 'replica'|replicas of 'default')"
        return r"replica 'replica'"
    if connection.vendor != "postgresql":
        pytest.skip(
            "MariaDB/MySQL primaries do not know their replicas' lag: "
            "the package reads it on the replica (REPLICA_DATABASES) only"
        )
    return r"replicas of 'default'"


def the_run() -> BackfillRun:
    return BackfillRun.objects.get(name=BACKFILL)


def started(rows: int) -> None:
    Item.objects.bulk_create([Item() for _ in range(rows)])


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["primary", "replica"])
def test_lag_throttles_the_run_until_the_replica_catches_up(
    where: str, replay: Replay, traffic: Traffic, start_run: Callable[..., RunProcess]
) -> None:
    who = measured(where)
    started(3000)
    run = start_run(where)
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=3).exists())

    held = replay.hold()
    wait_for(lambda: re.search(LAG, the_run().throttle_reason) is not None, timeout=15)
    throttled_after = time.monotonic() - held
    reason = the_run().throttle_reason
    assert re.fullmatch(rf"{who} {LAG}1s", reason), reason
    # The lag passes 1 s a second after the hold; the next health check sees it.
    assert throttled_after <= MAX_LAG + HEALTH_CHECK_SECONDS + SLACK, throttled_after
    scanned = the_run().rows_scanned
    time.sleep(1.0)
    assert the_run().rows_scanned == scanned  # no chunk while throttled
    assert the_run().state == "running"

    replay.release()
    caught_up = replay.wait_until_caught_up()
    wait_for(lambda: the_run().rows_scanned > scanned, timeout=15)
    continued_after = time.monotonic() - caught_up
    assert continued_after <= 2.0, continued_after

    assert run.wait(timeout=60) == 0, run.text
    assert re.search(rf"throttled: {who} {LAG}1s", run.text), run.text
    assert "unthrottled after" in run.text
    finished = the_run()
    assert finished.state == "completed" and finished.throttle_reason == ""
    assert finished.time_throttled >= 1.0
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


@pytest.mark.parametrize("where", ["primary", "replica"])
def test_lag_past_critical_pauses_the_run_with_exit_status_75(
    where: str, replay: Replay, traffic: Traffic, start_run: Callable[..., RunProcess]
) -> None:
    who = measured(where)
    started(3000)
    run = start_run(where, critical=CRITICAL_LAG)
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=3).exists())

    held = replay.hold()
    code = run.wait(timeout=30)
    paused_after = time.monotonic() - held

    assert code == 75, run.text
    assert paused_after <= CRITICAL_LAG + HEALTH_CHECK_SECONDS + SLACK, paused_after
    paused = the_run()
    assert paused.state == "paused"
    assert re.fullmatch(rf"critical: {who} {LAG}critical 4s", paused.status_reason), paused
    assert re.search(rf"throttled: {who} {LAG}1s", run.text), run.text  # first throttled
    assert "Paused on a critical health threshold" in run.text
    assert 0 < paused.rows_scanned < 3000


def test_a_caught_up_replica_of_an_idle_primary_is_not_behind(replay: Replay) -> None:
    # Nothing commits on the primary for 2.5 s: the replica is as current as it can be. (The
    # time since the last replayed commit is not a lag: it grows on an idle primary.)
    replay.wait_until_caught_up()
    time.sleep(2.5)
    delay = replica_delay("replica")
    assert delay is not None and delay < MAX_LAG, delay


def test_a_stopped_sql_thread_throttles_the_run_until_it_replays_again(
    replay: Replay, traffic: Traffic, start_run: Callable[..., RunProcess]
) -> None:
    if connection.vendor != "mysql":
        pytest.skip("MariaDB/MySQL's SQL thread")
    started(3000)
    run = start_run("replica", critical=2.0)
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=3).exists())

    stopped = replay.stop_sql_thread()
    reason = "replica 'replica' reports no replication (stopped?)"
    wait_for(lambda: the_run().throttle_reason == reason, timeout=15)
    throttled_after = time.monotonic() - stopped
    assert throttled_after <= HEALTH_CHECK_SECONDS + SLACK, throttled_after
    # Seconds_Behind_Master is NULL while the SQL thread is stopped: there is no figure to
    # compare with CRITICAL_REPLICA_LAG, so the run waits (throttled) rather than pausing.
    time.sleep(2.0 + HEALTH_CHECK_SECONDS + SLACK - throttled_after)
    scanned = the_run().rows_scanned
    assert run.process.poll() is None and the_run().throttle_reason == reason

    replay.release()
    caught_up = replay.wait_until_caught_up()
    wait_for(lambda: the_run().rows_scanned > scanned, timeout=15)
    continued_after = time.monotonic() - caught_up
    assert continued_after <= 2.0, continued_after
    assert run.wait(timeout=60) == 0, run.text
    assert f"throttled: {reason}" in run.text
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
