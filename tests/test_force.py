"""`backfill run --force` takes over runs whose owner is gone, never one a live process on this
host still works on. Every runner is a real `manage.py` process on the test database."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import manage, wait_until_killed_sessions_end
from tests.test_control import BREATHE, SLOW, histogram, latest_run, seed, wait_until_claimed_by

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 1500  # ~7 s for the first runner: the second one surely starts and ends inside it


@pytest.fixture
def start_run(
    spawn: Callable[[list[str]], subprocess.Popen[str]],
) -> Callable[..., subprocess.Popen[str]]:
    def start(name: str, *args: str) -> subprocess.Popen[str]:
        return spawn(["backfill", "run", name, "--progress-interval", "0", *args])

    return start


def test_force_refuses_to_take_over_a_live_owner_on_this_host(
    start_run: Callable[..., subprocess.Popen[str]],
) -> None:
    seed(ROWS)
    first = start_run(SLOW, *BREATHE)
    wait_until_claimed_by(SLOW, first, chunks=1)

    code, out, err = manage(["backfill", "run", SLOW, "--force"], project="tests")

    assert code != 0, (out, err)
    assert "is owned by a live process on this host" in err, err
    assert f"pid {first.pid}" in err
    assert "--force only takes over owners that are gone" in err
    assert first.poll() is None, "the first runner finished before --force was tried"
    run = latest_run(SLOW)
    assert run is not None and (run.state, run.owner_pid) == ("running", first.pid)

    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    run.refresh_from_db()
    assert (run.state, run.rows_processed, run.owner_token) == ("completed", ROWS, None)
    assert histogram() == {1: ROWS}


def test_force_takes_over_an_owner_killed_with_sigkill(
    start_run: Callable[..., subprocess.Popen[str]],
) -> None:
    seed(ROWS)
    first = start_run(SLOW, *BREATHE)
    wait_until_claimed_by(SLOW, first, chunks=2)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    wait_until_killed_sessions_end()
    run = latest_run(SLOW)
    assert run is not None
    # kill -9 leaves the run `running`, its lease fresh, owned by a pid that no longer exists.
    assert (run.state, run.owner_pid) == ("running", first.pid)
    done_before = run.rows_processed
    assert 0 < done_before < ROWS

    code, out, err = manage(["backfill", "run", SLOW, "--force", "--batch-size", "500"], "tests")

    assert code == 0, (out, err)
    run.refresh_from_db()
    assert (run.state, run.rows_processed, run.owner_token) == ("completed", ROWS, None)
    assert histogram() == {1: ROWS}  # the takeover resumed at the checkpoint: none twice
