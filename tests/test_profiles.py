"""Profiles (gentle / balanced / fast) and the duty cycle: what a run starts with, what
`backfill set` changes on a running process, the duty cycle's rests in a real run, and the
errors for values no run accepts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from backfills import conf, control, profiles, run_backfill
from backfills.checks import check_backfills, check_settings
from backfills.engine.options import RunOptions, new_run_settings
from backfills.engine.pacing import rest_after
from backfills.exceptions import BackfillConfigurationError, BackfillError
from backfills.models import BackfillRun
from backfills.registry import registry
from tests.conftest import manage, wait_for
from tests.test_admin import open_parallel_run, operator, run_url
from tests.testapp.backfills import CountItems, SlowCountItems
from tests.testapp.models import Item

COUNT = "testapp.count_items"
SLOW = "testapp.slow_count_items"
BUMP = "testapp.bump_records"  # an UpdateBackfill: one statement holds the chunk's locks


def started(name: str, **options: Any) -> Any:
    return new_run_settings(registry.get(name), RunOptions(**options), conf.snapshot())


# -- what a run starts with ----------------------------------------------------------------


def test_each_profile_sets_the_target_the_guard_and_the_duty(settings: Any) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, "BLOCKING_BUDGET": 0.1, "BLOCKING_LIMIT": 1.0}
    snap = conf.snapshot()
    balanced = started(SLOW, target_chunk_time=None)
    assert (balanced.profile, balanced.max_duty) == ("balanced", None)
    assert balanced.target_chunk_time == snap.target_chunk_time == 0.5
    gentle = started(SLOW, profile="gentle")
    assert (gentle.profile, gentle.target_chunk_time, gentle.max_duty) == ("gentle", 0.1, 0.5)
    fast = started(SLOW, profile="fast")
    assert (fast.profile, fast.target_chunk_time, fast.max_duty) == ("fast", 1.0, None)
    # Kinds whose one statement holds the chunk's locks get each profile's shorter target.
    assert [started(BUMP, profile=p).target_chunk_time for p in profiles.NAMES] == [
        0.05,
        0.2,
        0.4,
    ]
    # The guard's budget and limit; BLOCKING_BUDGET = None turns it off under every profile.
    assert profiles.blocking("gentle", snap) == (0.05, 0.25)
    assert profiles.blocking("balanced", snap) == (0.1, 1.0)
    assert profiles.blocking("fast", snap) == (1.0, 2.0)
    settings.BACKFILLS = {**settings.BACKFILLS, "BLOCKING_BUDGET": None}
    assert profiles.blocking("gentle", conf.snapshot()) == (None, None)


def test_explicit_values_win_over_profiles_and_now_wins_over_the_class(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given now: an explicit knob wins over the profile given with it.
    mixed = started(SLOW, profile="gentle", target_chunk_time=0.3, max_duty=0.25)
    assert (mixed.profile, mixed.target_chunk_time, mixed.max_duty) == ("gentle", 0.3, 0.25)
    assert started(SLOW, max_duty=1.0).max_duty is None  # 1: no duty cycle
    # The class's knobs win over the setting's profile, not over a profile given now.
    monkeypatch.setattr(SlowCountItems, "target_chunk_time", 0.7)
    monkeypatch.setattr(SlowCountItems, "max_duty", 0.8)
    settings.BACKFILLS = {**settings.BACKFILLS, "PROFILE": "gentle"}
    by_class = started(SLOW)
    assert (by_class.profile, by_class.target_chunk_time, by_class.max_duty) == ("gentle", 0.7, 0.8)
    now = started(SLOW, profile="fast")
    assert (now.profile, now.target_chunk_time, now.max_duty) == ("fast", 1.0, None)
    # The class's profile wins over the setting's.
    monkeypatch.setattr(SlowCountItems, "target_chunk_time", None)
    monkeypatch.setattr(SlowCountItems, "max_duty", None)
    monkeypatch.setattr(SlowCountItems, "profile", "fast")
    assert started(SLOW).profile == "fast"


def test_the_duty_cycle_rests_in_proportion_to_each_chunk() -> None:
    run = BackfillRun(name="x", sleep=0.0, max_duty=0.5)
    assert rest_after(0.2, run) == pytest.approx(0.2)  # half the time working
    run.max_duty = 0.25
    assert rest_after(0.1, run) == pytest.approx(0.3)
    run.sleep = 0.5  # the longer of the sleep and the duty's rest, not both
    assert rest_after(0.1, run) == pytest.approx(0.5)
    run.max_duty = None
    assert rest_after(0.1, run) == 0.5
    assert profiles.duty_rest(0.1, None) == 0.0


# -- real runs --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_gentle_run_works_at_most_half_of_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    Item.objects.bulk_create([Item() for _ in range(80)])
    monkeypatch.setattr(CountItems, "row_delay", 0.01)  # 10-row chunks of about 0.1 s

    result = run_backfill(COUNT, profile="gentle")
    assert result.run.state == "completed"
    gentle = BackfillRun.objects.get(pk=result.run.pk)
    assert (gentle.profile, gentle.max_duty) == ("gentle", 0.5)
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
    assert gentle.finished_at and gentle.started_at
    wall = (gentle.finished_at - gentle.started_at).total_seconds()
    # Rests are added to the work, so this bound holds however slow the machine is.
    assert wall >= 1.9 * gentle.time_running, (wall, gentle.time_running)

    result = run_backfill(COUNT, restart=True)  # balanced: no duty cycle
    balanced = BackfillRun.objects.get(pk=result.run.pk)
    assert (balanced.profile, balanced.max_duty) == ("balanced", None)
    assert balanced.finished_at and balanced.started_at
    balanced_wall = (balanced.finished_at - balanced.started_at).total_seconds()
    assert balanced_wall < 1.5 * balanced.time_running, (balanced_wall, balanced.time_running)


@pytest.mark.django_db(transaction=True)
def test_set_profile_reaches_a_running_process_and_status_shows_it(
    spawn: Callable[[list[str]], subprocess.Popen[str]],
) -> None:
    Item.objects.bulk_create([Item() for _ in range(600)], batch_size=2000)
    # 20-row chunks of about 40 ms, a 0.3 s sleep between them: a run of several seconds.
    runner = spawn(["backfill", "run", SLOW, "--progress-interval", "0", "--sleep", "0.3"])
    wait_for(lambda: BackfillRun.objects.filter(name=SLOW, chunks_done__gte=1).exists())

    code, out, err = manage(["backfill", "set", SLOW, "--profile", "gentle"], project="tests")
    assert code == 0, err
    assert "profile=gentle" in out and "max_duty=0.5" in out and "target_chunk_time=0.1" in out
    run = BackfillRun.objects.get(name=SLOW)
    assert (run.profile, run.max_duty, run.batch_size, run.target_chunk_time) == (
        "gentle",
        0.5,
        None,
        0.1,
    )
    code, out, err = manage(["backfill", "status", SLOW], project="tests")
    assert code == 0, err
    assert "chunks sized to 0.1s, profile gentle, working at most 50% of the time" in out

    code, out, err = manage(["backfill", "set", SLOW, "--max-duty", "1"], project="tests")
    assert code == 0, err
    assert BackfillRun.objects.get(name=SLOW).max_duty is None

    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert "settings changed by `backfill set`: " in out and "profile=gentle" in out
    run.refresh_from_db()
    assert (run.state, run.profile, run.rows_processed) == ("completed", "gentle", 600)
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_admin_changes_the_profile_without_its_prefilled_values_getting_in_the_way() -> None:
    run = open_parallel_run()
    client = operator()
    # The form posts every field, prefilled with the run's values; only the profile changed.
    client.post(
        run_url(run, "settings"),
        {
            "target_chunk_time": str(run.target_chunk_time),
            "sleep": "0",
            "profile": "gentle",
            "max_duty": "1",
        },
    )
    fresh = BackfillRun.objects.get(pk=run.pk)
    assert (fresh.profile, fresh.target_chunk_time, fresh.max_duty) == ("gentle", 0.1, 0.5)
    page = client.get(run_url(run)).content.decode()
    assert "profile gentle, working at most 50% of the time" in page


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_values_no_run_accepts_are_clear_errors(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = manage(["backfill", "run", COUNT, "--profile", "wild"], project="tests")
    assert code != 0 and "invalid choice: 'wild'" in err and "Traceback" not in err
    code, out, err = manage(["backfill", "run", COUNT, "--max-duty", "0"], project="tests")
    assert code != 0 and "expected a fraction of the time in (0, 1], got '0'" in err
    code, out, err = manage(["backfill", "set", COUNT, "--max-duty", "1.5"], project="tests")
    assert code != 0 and "expected a fraction of the time in (0, 1]" in err
    assert not BackfillRun.objects.exists()

    with pytest.raises(BackfillConfigurationError, match="profile must be one of gentle"):
        RunOptions(profile="wild")
    with pytest.raises(BackfillConfigurationError, match=r"max_duty must be a fraction"):
        RunOptions(max_duty=0)
    with pytest.raises(BackfillError, match="profile must be one of"):
        control.change_settings(COUNT, profile="wild")

    monkeypatch.setattr(CountItems, "profile", "wild")
    monkeypatch.setattr(CountItems, "max_duty", 2)
    ids = [m.id for m in check_backfills() if m.obj is CountItems]
    assert ids == ["backfills.E005", "backfills.E005"]

    settings.BACKFILLS = {**settings.BACKFILLS, "PROFILE": "turbo", "MAX_DUTY": 0}
    assert [m.id for m in check_settings()] == ["backfills.E006", "backfills.E006"]
    monkeypatch.setattr(CountItems, "profile", None)
    with pytest.raises(BackfillConfigurationError, match="PROFILE setting"):
        run_backfill(COUNT)
    settings.BACKFILLS = {**settings.BACKFILLS, "PROFILE": "balanced"}
    with pytest.raises(BackfillConfigurationError, match=r"BACKFILLS\['MAX_DUTY'\] must be"):
        run_backfill(COUNT)
    assert not BackfillRun.objects.exists()
