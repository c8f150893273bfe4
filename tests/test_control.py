"""Controlling a running backfill from other processes: concurrent runners, pause, resume, cancel.

Every actor is a real `manage.py` process on the test database; the test process only seeds
rows and reads the tables.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections import Counter
from collections.abc import Callable

import pytest

from backfills.models import BackfillRun
from tests.conftest import manage, wait_for, wait_until_killed_sessions_end
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

HOST = socket.gethostname()
SLOW = "testapp.slow_count_items"  # 20 rows a chunk, ~40 ms a chunk
CHAOS = "testapp.chaos_count_items"  # 50 rows a chunk, ~30 ms a chunk
COUNT = "testapp.count_items"  # 10 rows a chunk, fast
#: Runners that other processes must reach sleep between chunks. On SQLite another process's
#: UPDATE (a claim, a pause request) needs the single write lock, and its busy handler retries
#: only every ~100 ms, while the runner's own gap after a chunk (SQLITE_GAP) is a few ms for
#: chunks this short. --sleep leaves a wide window, so these tests do not hinge on that timing.
BREATHE = ("--sleep", "0.05")


def seed(count: int) -> None:
    Item.objects.bulk_create([Item() for _ in range(count)], batch_size=2000)


def latest_run(name: str) -> BackfillRun | None:
    return BackfillRun.objects.filter(name=name).order_by("-id").first()


def histogram() -> Counter[int]:
    return Counter(Item.objects.values_list("counter", flat=True))


StartRun = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_run(spawn: Callable[[list[str]], subprocess.Popen[str]]) -> StartRun:
    """start_run(NAME, *ARGS): `backfill run NAME ARGS` in the background; killed at the end."""

    def start(name: str, *args: str) -> subprocess.Popen[str]:
        return spawn(["backfill", "run", name, "--progress-interval", "0", *args])

    return start


def wait_until_claimed_by(name: str, process: subprocess.Popen[str], chunks: int = 0) -> None:
    def claimed() -> bool:
        assert process.poll() is None, process.communicate()
        run = latest_run(name)
        return (
            run is not None
            and run.state == "running"
            and run.owner_pid == process.pid
            and run.chunks_done >= chunks
        )

    wait_for(claimed)


def assert_data_matches_checkpoint(run: BackfillRun, total: int) -> None:
    assert run.rows_scanned == run.rows_processed
    assert histogram() == +Counter({1: run.rows_processed, 0: total - run.rows_processed})
    cursor = int(run.cursor)
    assert not Item.objects.filter(pk__lte=cursor).exclude(counter=1).exists()
    assert not Item.objects.filter(pk__gt=cursor).exclude(counter=0).exists()


def owned_message(winner: subprocess.Popen[str]) -> str:
    return f"owned by another process: host {HOST}, pid {winner.pid}, since "


# -- two runners ---------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_two_runners_started_together_exactly_one_works(round_: int, start_run: StartRun) -> None:
    seed(600)  # ~3 s of work: the loser's claim surely falls inside it
    first, second = start_run(SLOW, *BREATHE), start_run(SLOW, *BREATHE)
    results = {p: p.communicate(timeout=60) for p in (first, second)}

    winners = [p for p in results if p.returncode == 0]
    assert len(winners) == 1, {p.pid: (p.returncode, *results[p]) for p in results}
    winner = winners[0]
    loser = second if winner is first else first
    out, err = results[loser]
    assert loser.returncode == 1, err
    assert owned_message(winner) in err
    assert "Completed run" not in out
    out, err = results[winner]
    assert "Started run #" in out
    assert f"Completed run #{latest_run(SLOW).pk} of {SLOW}: 600 rows walked" in out
    run = latest_run(SLOW)
    assert (run.state, run.rows_processed, run.owner_token) == ("completed", 600, None)
    assert BackfillRun.objects.count() == 1
    assert histogram() == {1: 600}


def test_second_runner_after_the_first_claimed_is_refused(start_run: StartRun) -> None:
    seed(1000)  # ~4.5 s of work
    first = start_run(SLOW, *BREATHE)
    wait_until_claimed_by(SLOW, first, chunks=1)

    code, out, err = manage(["backfill", "run", SLOW], project="tests")
    assert code == 1, out
    assert owned_message(first) in err
    # `resume` refuses the same way when no pause request is pending.
    code, out, err = manage(["backfill", "resume", SLOW], project="tests")
    assert code == 1, out
    assert owned_message(first) in err
    assert first.poll() is None, "the first runner finished before the second one started"

    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "Completed run" in out
    run = latest_run(SLOW)
    assert (run.state, run.rows_processed, run.chunks_done) == ("completed", 1000, 50)
    assert histogram() == {1: 1000}


def test_second_runner_after_the_first_completed_says_already_completed() -> None:
    seed(100)
    code, out, err = manage(["backfill", "run", SLOW], project="tests")
    assert code == 0, err

    code, out, err = manage(["backfill", "run", SLOW], project="tests")
    assert code == 0, err
    assert f"{SLOW} already completed (run #{latest_run(SLOW).pk}, finished " in out
    assert "Pass --restart to run it again" in out
    assert BackfillRun.objects.count() == 1
    assert histogram() == {1: 100}


# -- pause / resume / cancel from another process --------------------------------------------


def test_pause_from_another_process_then_resume_completes(start_run: StartRun) -> None:
    seed(5000)  # 100 chunks, ~8 s of work
    runner = start_run(CHAOS, *BREATHE)
    wait_until_claimed_by(CHAOS, runner, chunks=2)
    pk = latest_run(CHAOS).pk

    code, out, err = manage(["backfill", "pause", CHAOS], project="tests")
    assert code == 0, err
    assert (
        f"Asked run #{pk} of {CHAOS} (host {HOST}, pid {runner.pid}) to pause at its next "
        "chunk boundary." in out
    )
    out, err = runner.communicate(timeout=60)

    assert runner.returncode == 0, err
    assert f"Paused run #{pk} of {CHAOS} at cursor pk " in out
    assert "paused on request (backfill pause)" in out
    run = latest_run(CHAOS)
    assert run.state == "paused"
    assert run.status_reason == "paused on request (backfill pause)"
    assert run.requested_state == ""
    assert (run.owner_token, run.owner_pid, run.owner_host) == (None, None, "")
    assert run.active_key == CHAOS
    assert 2 <= run.chunks_done < 100
    assert run.rows_scanned == run.chunks_done * 50  # stopped at a chunk boundary
    assert_data_matches_checkpoint(run, 5000)

    code, out, err = manage(["backfill", "status", CHAOS], project="tests")
    assert code == 0, err
    assert f"#{pk} {CHAOS}: paused on request (backfill pause)" in out

    code, out, err = manage(
        [
            "backfill",
            "resume",
            CHAOS,
            *("--batch-size", "1000", "--sleep", "0", "--progress-interval", "0"),
        ],
        project="tests",
    )
    assert code == 0, err
    assert (
        f"Resuming run #{pk} of {CHAOS} from its checkpoint: {run.rows_scanned:,} of 5,000" in out
    )
    assert f"Completed run #{pk} of {CHAOS}: 5,000 rows walked, 5,000 processed" in out
    run.refresh_from_db()
    assert (run.state, run.rows_scanned, run.rows_processed) == ("completed", 5000, 5000)
    assert BackfillRun.objects.count() == 1
    assert histogram() == {1: 5000}


def test_cancel_from_another_process_ends_the_run_for_good(start_run: StartRun) -> None:
    seed(5000)
    runner = start_run(CHAOS, *BREATHE)
    wait_until_claimed_by(CHAOS, runner, chunks=2)
    pk = latest_run(CHAOS).pk

    code, out, err = manage(["backfill", "cancel", CHAOS, "--no-input"], project="tests")
    assert code == 0, err
    assert f"Asked run #{pk} of {CHAOS} (host {HOST}, pid {runner.pid}) to cancel" in out
    out, err = runner.communicate(timeout=60)

    assert runner.returncode == 0, err
    assert f"Cancelled run #{pk} of {CHAOS}" in out
    run = latest_run(CHAOS)
    assert run.state == "cancelled"
    assert run.status_reason == "cancelled on request (backfill cancel)"
    assert run.active_key is None
    assert run.finished_at is not None
    assert run.requested_state == ""
    assert run.owner_token is None
    assert 2 <= run.chunks_done < 100
    assert_data_matches_checkpoint(run, 5000)
    done = run.rows_processed

    code, out, err = manage(["backfill", "run", CHAOS], project="tests")
    assert code == 1
    assert f"The latest run of {CHAOS} (#{pk}) was cancelled" in err
    assert "--restart" in err
    code, out, err = manage(["backfill", "resume", CHAOS], project="tests")
    assert code == 1
    assert f"{CHAOS} has no unfinished run to resume" in err
    code, out, err = manage(["backfill", "pause", CHAOS], project="tests")
    assert code == 1
    assert f"{CHAOS} has no unfinished run to pause" in err
    assert histogram() == +Counter({1: done, 0: 5000 - done})

    # --restart is a new run from the first row: the rows done before are done again.
    code, out, err = manage(
        ["backfill", "run", CHAOS, "--restart", "--no-input", "--batch-size", "1000"],
        project="tests",
    )
    assert code == 0, err
    assert [r.state for r in BackfillRun.objects.order_by("id")] == ["cancelled", "completed"]
    assert histogram() == +Counter({2: done, 1: 5000 - done})


def test_pause_withdrawn_by_resume_while_running_lets_the_run_complete(start_run: StartRun) -> None:
    seed(20)
    # Two chunks with 6 s between them. A pause request is acted on at the next chunk
    # boundary, after that sleep: the time for `pause` and then `resume` to come and go
    # (two command processes, which took over 2.5 s on a loaded CI machine).
    runner = start_run(COUNT, "--sleep", "6")
    wait_until_claimed_by(COUNT, runner, chunks=1)
    pk = latest_run(COUNT).pk

    code, out, err = manage(["backfill", "pause", COUNT], project="tests")
    assert code == 0, err
    assert f"Asked run #{pk} of {COUNT} (host {HOST}, pid {runner.pid}) to pause" in out
    run = latest_run(COUNT)
    assert (run.state, run.requested_state, run.chunks_done) == ("running", "paused", 1)

    code, out, err = manage(["backfill", "resume", COUNT], project="tests")
    assert code == 0, err
    assert (
        f"Withdrew the pause request: run #{pk} of {COUNT} keeps running on {HOST} "
        f"(pid {runner.pid})." in out
    )
    run = latest_run(COUNT)
    assert (run.state, run.requested_state, run.chunks_done) == ("running", "", 1)
    assert run.owner_pid == runner.pid

    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert "Paused" not in out
    assert f"Completed run #{pk} of {COUNT}: 20 rows walked, 20 processed in 2 chunks" in out
    run.refresh_from_db()
    assert (run.state, run.chunks_done, run.status_reason) == ("completed", 2, "")
    assert BackfillRun.objects.count() == 1
    assert histogram() == {1: 20}


def test_pause_of_a_run_whose_owner_was_killed_then_resume(start_run: StartRun) -> None:
    seed(5000)
    runner = start_run(CHAOS)
    wait_until_claimed_by(CHAOS, runner, chunks=2)
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=60)
    wait_until_killed_sessions_end()
    run = latest_run(CHAOS)
    assert (run.state, run.owner_pid) == ("running", runner.pid)

    # The owner's pid is gone on this host: nobody would act on a request, so it pauses now.
    code, out, err = manage(["backfill", "pause", CHAOS], project="tests")
    assert code == 0, err
    assert f"Run #{run.pk} of {CHAOS} is now paused." in out
    run.refresh_from_db()
    assert (run.state, run.owner_token, run.requested_state) == ("paused", None, "")
    assert_data_matches_checkpoint(run, 5000)

    code, out, err = manage(["backfill", "resume", CHAOS, "--batch-size", "1000"], project="tests")
    assert code == 0, err
    assert f"Resuming run #{run.pk} of {CHAOS}" in out
    run.refresh_from_db()
    assert (run.state, run.rows_processed) == ("completed", 5000)
    assert histogram() == {1: 5000}
