"""The Python control API (``backfills.pause/resume/cancel/change_settings/status``) and the
state of a backfill in either direction, on a real database."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

import backfills
from backfills import Outcome, run_backfill
from backfills.control import ControlResult, NoActiveRun
from backfills.engine.ledger import InvalidTransition, Ledger
from backfills.engine.owners import pid_alive
from backfills.exceptions import BackfillError
from backfills.models import BackfillRun
from tests.test_kinds import make_records
from tests.testapp.models import Item, Record

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = "testapp.count_items"


def seed(count: int = 30) -> None:
    Item.objects.bulk_create([Item() for _ in range(count)])


def owned_by(host: str, pid: int, heartbeat_age: float = 0) -> BackfillRun:
    """The latest run, made to look owned by another process."""
    moment = timezone.now() - timedelta(seconds=heartbeat_age)
    BackfillRun.objects.update(
        state="running",
        owner_token="someone-else",
        owner_host=host,
        owner_pid=pid,
        owned_since=moment,
        heartbeat_at=moment,
    )
    return BackfillRun.objects.get()


def dead_pid() -> int:
    pid = 2**22 + 4321
    while pid_alive(pid):
        pid += 1
    return pid


def test_cancel_of_a_paused_run_releases_every_owner_field() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    from backfills.control import active_run

    unfinished = active_run(COUNT)
    assert unfinished is not None and unfinished.state == "paused"
    assert active_run(COUNT, reverse=True) is None

    result = backfills.cancel(COUNT, by="ops@deploy-host")
    assert active_run(COUNT) is None

    assert isinstance(result, ControlResult) and result.action == "applied"
    run = BackfillRun.objects.get()
    assert (run.state, run.active_key, run.finished_at is not None) == ("cancelled", None, True)
    assert (run.owner_token, run.owner_pid, run.owner_host, run.owned_since) == (
        None,
        None,
        "",
        None,
    )
    assert (
        run.status_reason == "cancelled by `backfill cancel` by ops@deploy-host while not running"
    )
    with pytest.raises(NoActiveRun, match=r"latest run #\d+ is cancelled; .*--restart"):
        backfills.resume(COUNT)


def test_pause_of_a_live_owner_is_a_request_and_resume_withdraws_it() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    owned_by("another-host", 4242)

    paused = backfills.pause(COUNT)
    assert paused.action == "requested" and "host another-host, pid 4242" in paused.message
    assert BackfillRun.objects.get().requested_state == "paused"

    withdrawn = backfills.resume(COUNT)
    assert isinstance(withdrawn, ControlResult) and withdrawn.action == "withdrawn"
    assert BackfillRun.objects.get().requested_state == ""


def test_a_run_whose_owner_is_gone_reads_interrupted_and_is_paused_directly() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    owned_by(socket.gethostname(), dead_pid())

    (shown,) = backfills.status([COUNT])
    assert (shown.state, shown.shown_state, shown.summary()["state"]) == (
        "running",
        "interrupted",
        "interrupted",
    )
    assert backfills.backfill_state(COUNT).state == "interrupted"

    result = backfills.pause(COUNT)
    assert result.action == "applied" and result.run.state == "paused"
    assert BackfillRun.objects.get().owned_since is None

    again = backfills.pause(COUNT)
    assert again.action == "unchanged"


def test_a_stale_heartbeat_on_another_host_reads_interrupted_too() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    owned_by("another-host", 4242, heartbeat_age=600)
    assert backfills.status()[0].shown_state == "interrupted"
    owned_by("another-host", 4242, heartbeat_age=1)
    assert backfills.status()[0].shown_state == "running"


def test_resume_continues_a_paused_run_to_the_end() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)

    result = backfills.resume(COUNT)

    assert not isinstance(result, ControlResult)
    assert result.outcome is Outcome.COMPLETED and result.run.rows_scanned == 30
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


def test_change_settings_checks_values_and_counts_versions() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    for kwargs, message in [
        ({"batch_size": "many"}, "batch_size must be a whole number >= 1"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"target_chunk_time": 0}, "target_chunk_time must be a finite number of seconds > 0"),
        ({"target_chunk_time": -1}, "target_chunk_time must be a finite number of seconds > 0"),
        ({"sleep": float("nan")}, "sleep must be a finite number of seconds >= 0"),
        ({}, "Nothing to change"),
    ]:
        with pytest.raises(BackfillError, match=message):
            backfills.change_settings(COUNT, **kwargs)
    assert BackfillRun.objects.get().settings_version == 0

    result = backfills.change_settings(COUNT, batch_size=7, sleep=0)
    assert result.run.batch_size == 7 and result.run.settings_version == 1
    assert "used when the run resumes" in result.message
    result = backfills.change_settings(COUNT, target_chunk_time=0.3)
    assert (result.run.batch_size, result.run.target_chunk_time) == (None, 0.3)


def test_a_reverse_after_a_completed_run_means_the_data_is_reversed() -> None:
    make_records(12)
    name = "testapp.fill_records"
    run_backfill(name)
    state = backfills.backfill_state(name)
    assert (state.state, state.done) == ("completed", True)

    run_backfill(name, reverse=True)
    state = backfills.backfill_state(name)
    assert (state.state, state.done) == ("reversed", False)
    assert Record.objects.filter(done=True).count() == 0

    # `run` sees that the forward data was undone and starts a new run instead of saying
    # "already completed".
    result = run_backfill(name)
    assert result.outcome is Outcome.COMPLETED and result.run.rows_processed == 12
    assert Record.objects.filter(done=False).count() == 0
    assert backfills.backfill_state(name).done
    assert run_backfill(name).outcome is Outcome.ALREADY_COMPLETED


def test_a_reverse_cancelled_before_its_first_chunk_changes_nothing() -> None:
    make_records(12)
    name = "testapp.fill_records"
    run_backfill(name)
    Ledger("default", 30).create(
        BackfillRun(name=name, reverse=True, state="cancelled", active_key=None)
    )
    assert backfills.backfill_state(name).done
    assert run_backfill(name).outcome is Outcome.ALREADY_COMPLETED


def test_the_ledger_refuses_a_transition_the_table_does_not_allow() -> None:
    seed()
    run_backfill(COUNT)
    run = BackfillRun.objects.get()
    with pytest.raises(InvalidTransition, match="is completed; it cannot be paused"):
        Ledger("default", 30).stop_unowned(run, "paused", "no")
    assert BackfillRun.objects.get().state == "completed"


def test_force_never_takes_over_a_live_pid_on_this_host() -> None:
    seed()
    run_backfill(COUNT, max_chunks=1)
    owned_by(socket.gethostname(), os.getpid())

    with pytest.raises(BackfillError, match="--force only takes over owners that are gone"):
        run_backfill(COUNT, force=True)
    with pytest.raises(BackfillError, match="--force only takes over owners that are gone"):
        run_backfill(COUNT, force=True, restart=True)
    assert BackfillRun.objects.get().owner_token == "someone-else"
    # A live owner elsewhere is taken over with --force: that is what it is for.
    owned_by("another-host", 4242)
    assert run_backfill(COUNT, force=True).outcome is Outcome.COMPLETED


def test_events_carry_a_snapshot_that_later_chunks_do_not_change() -> None:
    seed(30)
    events: list[Any] = []
    run_backfill(COUNT, listeners=[events.append])
    scanned = [
        event.run.rows_scanned for event in events if type(event).__name__ == "ChunkCommitted"
    ]
    assert scanned == [10, 20, 30]
