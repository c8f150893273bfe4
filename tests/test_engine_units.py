"""The engine's decisions without a database: retry policy, health wait, tickers, sleeps,
the table of state transitions and the options' checks."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
from django.db import OperationalError

from backfills.engine.gate import HealthGate, Stop, StopGate
from backfills.engine.ledger import TRANSITIONS, sources
from backfills.engine.options import RunOptions
from backfills.engine.pacing import Ticker, interruptible_sleep
from backfills.engine.retry import RetryPolicy
from backfills.exceptions import BackfillConfigurationError
from backfills.models import BackfillRun
from backfills.throttle import Health

State = BackfillRun.State
ROOT = pathlib.Path(__file__).resolve().parent.parent / "backfills"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def deadlock() -> OperationalError:
    error = OperationalError("deadlock detected")
    error.__cause__ = type("Cause", (Exception,), {"sqlstate": "40P01"})("deadlock detected")
    return error


def lock_timeout() -> OperationalError:
    error = OperationalError("canceling statement due to lock timeout")
    error.__cause__ = type("Cause", (Exception,), {"sqlstate": "55P03"})("lock timeout")
    return error


# -- retry ------------------------------------------------------------------------------------


def test_transient_errors_back_off_exponentially_up_to_the_cap_then_give_up() -> None:
    policy = RetryPolicy(max_retries=4, base_delay=0.5, max_delay=1.5, jitter=lambda lo, hi: hi)
    attempts = policy.attempts()
    decisions = [attempts.after(deadlock()) for _ in range(5)]

    assert [d.delay for d in decisions[:4] if d] == [0.5, 1.0, 1.5, 1.5]
    assert [d.attempt for d in decisions[:4] if d] == [1, 2, 3, 4]
    assert decisions[4] is None  # the fifth failure is past max_retries


def test_jitter_takes_half_to_all_of_the_delay() -> None:
    seen: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        seen.append((low, high))
        return low

    decision = RetryPolicy(3, 2.0, 10.0, jitter=jitter).attempts().after(deadlock())
    assert decision is not None and decision.delay == 1.0 and seen == [(0.5, 1.0)]


def test_a_real_error_is_not_retried() -> None:
    assert RetryPolicy(5, 0.1, 1.0).attempts().after(ValueError("bad row")) is None


def test_the_second_timeout_of_a_chunk_halves_it_a_deadlock_does_not() -> None:
    attempts = RetryPolicy(9, 0.1, 1.0).attempts()
    shrinks = [
        decision.shrink
        for decision in (
            attempts.after(lock_timeout()),
            attempts.after(deadlock()),
            attempts.after(lock_timeout()),
            attempts.after(lock_timeout()),
        )
        if decision is not None
    ]
    assert shrinks == [False, False, True, True]
    # Each chunk starts counting afresh.
    fresh = RetryPolicy(9, 0.1, 1.0).attempts().after(lock_timeout())
    assert fresh is not None and not fresh.shrink


# -- health gate --------------------------------------------------------------------------------


class Hooks:
    def __init__(self, clock: FakeClock, stop_after: int | None = None) -> None:
        self.clock = clock
        self.log: list[Any] = []
        self.stop_after = stop_after

    def throttled(self, reason: str, wait: float, changed: bool) -> None:
        self.log.append(("throttled", reason, wait, changed))

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def stop_requested(self) -> Stop | None:
        sleeps = sum(1 for entry in self.log if entry[0] == "throttled")
        if self.stop_after is not None and sleeps >= self.stop_after:
            return Stop(State.PAUSED, "paused on request")
        return None

    def cleared(self, waited: float, healthy: bool) -> None:
        self.log.append(("cleared", waited, healthy))


def verdicts(*values: Any) -> Any:
    queue = list(values)

    def check(backfill: Any) -> Any:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return check


def test_healthy_checks_pass_without_waiting_or_recording() -> None:
    clock = FakeClock()
    hooks = Hooks(clock)
    gate = HealthGate([verdicts(None)], backfill=None, max_wait=5, clock=clock)  # type: ignore[arg-type]
    assert gate.wait(hooks) is None
    assert hooks.log == []


def test_the_wait_doubles_up_to_the_cap_and_records_reason_changes_once() -> None:
    clock = FakeClock()
    hooks = Hooks(clock)
    check = verdicts("lag 3s", "lag 3s", "lag 2s", "lag 2s", "lag 2s", True)
    gate = HealthGate([check], backfill=None, max_wait=1.0, clock=clock)  # type: ignore[arg-type]

    assert gate.wait(hooks) is None

    throttled = [entry for entry in hooks.log if entry[0] == "throttled"]
    assert [entry[2] for entry in throttled] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert [entry[3] for entry in throttled] == [True, False, True, False, False]
    assert hooks.log[-1] == ("cleared", pytest.approx(3.75), True)


def test_a_critical_verdict_pauses_at_once() -> None:
    clock = FakeClock()
    hooks = Hooks(clock)
    check = verdicts(Health.critical("on-call says stop"))
    gate = HealthGate([check], backfill=None, max_wait=1.0, clock=clock)  # type: ignore[arg-type]

    stop = gate.wait(hooks)

    assert stop == Stop(State.PAUSED, "critical: on-call says stop", critical=True)
    assert hooks.log == [("cleared", 0.0, False)]


def test_a_stop_request_ends_the_wait() -> None:
    clock = FakeClock()
    hooks = Hooks(clock, stop_after=2)
    gate = HealthGate([verdicts("busy")], backfill=None, max_wait=1.0, clock=clock)  # type: ignore[arg-type]

    assert gate.wait(hooks) == Stop(State.PAUSED, "paused on request")
    assert hooks.log[-1] == ("cleared", 0.75, False)


def test_stop_gate_order_signal_then_quota_then_poll_then_health() -> None:
    clock = FakeClock()
    polls: list[int] = []

    def poll() -> Stop | None:
        polls.append(1)
        return None

    health = HealthGate([verdicts("busy")], backfill=None, max_wait=1.0, clock=clock)  # type: ignore[arg-type]
    gate = StopGate(
        max_chunks=3,
        limit=None,
        poll=poll,
        poll_every=60.0,
        health=health,
        health_every=60.0,
        hooks=Hooks(clock, stop_after=1),
    )
    # Health is asked before the first chunk; here it waits until a stop request comes.
    assert gate.check(0, 0) == Stop(State.PAUSED, "paused on request")
    assert gate.check(1, 10) is None  # nothing due: health asked less than 60 s ago
    assert gate.check(3, 30) == Stop(State.PAUSED, "partial run: stopped after --max-chunks 3")
    gate.request_stop("interrupted by SIGTERM", 15)
    assert gate.check(1, 10) == Stop(State.PAUSED, "interrupted by SIGTERM")
    assert (gate.signum, polls) == (15, [])


# -- pacing ---------------------------------------------------------------------------------


def test_ticker_is_due_once_per_interval() -> None:
    clock = FakeClock()
    ticker = Ticker(1.0, clock=clock)
    assert not ticker.due()
    clock.sleep(1.0)
    assert ticker.due()
    ticker.reset()
    assert not ticker.due()
    assert Ticker(5.0, due_now=True, clock=clock).due()


def test_a_long_sleep_beats_the_heart_and_wakes_on_a_stop() -> None:
    clock = FakeClock()
    beats: list[float] = []
    interruptible_sleep(
        1.0,
        stopped=lambda: False,
        heartbeat=lambda: beats.append(clock()),
        beat_every=0.3,
        clock=clock,
        sleep=clock.sleep,
    )
    # Naps of 0.1 s: beats at 0.4 and 0.8 s (each at least 0.3 s after the last).
    assert beats == pytest.approx([100.4, 100.8]) and clock() == pytest.approx(101.0)

    started = clock()
    interruptible_sleep(
        10.0, stopped=lambda: clock() - started >= 0.45, clock=clock, sleep=clock.sleep
    )
    assert clock() - started == pytest.approx(0.5)


# -- transitions and options -------------------------------------------------------------------


def test_final_states_have_no_way_out_and_every_state_is_listed() -> None:
    assert set(TRANSITIONS) == set(State.values)
    for final in BackfillRun.FINAL:
        assert TRANSITIONS[final] == frozenset()
    assert sources(State.COMPLETED) == {State.RUNNING}
    assert State.COMPLETED not in sources(State.RUNNING)
    assert sources(State.PAUSED) == {State.PENDING, State.RUNNING, State.FAILED}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": "many"}, "batch_size must be a whole number >= 1, got 'many'"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"limit": True}, "limit must be a whole number >= 1"),
        ({"target_chunk_time": 0}, "target_chunk_time must be a finite number of seconds > 0"),
        ({"sleep": -1}, "sleep must be a finite number of seconds >= 0"),
        ({"sleep": float("inf")}, "sleep must be a finite number"),
        ({"restart": "yes"}, "restart must be True or False"),
    ],
)
def test_run_options_refuse_wrong_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BackfillConfigurationError, match=re.escape(message)):
        RunOptions(**options)


def test_vendor_sql_lives_in_the_db_package_and_run_rows_are_written_by_the_ledger() -> None:
    """The layout's two promises, checked on the source: no ``connection.vendor`` branch
    outside ``backfills/db/`` (``transient.py`` classifies errors by their own codes), and no
    write to the run or partition tables outside ``engine/ledger/``."""
    vendor_branch = re.compile(r"\.vendor\s*(==|!=|in\b|not in\b)")
    run_write = re.compile(
        r"Backfill(Run|Partition)\.objects[^\n]*\.(update|create|delete)\(|\brun\.save\(|"
        r"\bruns\b[^\n]*\.update\(|\bpartitions\.rows\b[^\n]*\.(update|create|bulk_create)\("
    )
    offenders: list[str] = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if not relative.startswith("db/") and vendor_branch.search(text):
            offenders.append(f"{relative}: vendor branch")
        if not relative.startswith(("engine/ledger/", "migrations/")) and run_write.search(text):
            offenders.append(f"{relative}: writes the run table")
    assert offenders == []


def test_a_check_that_builds_health_the_old_way_fails_loudly_instead_of_throttling() -> None:
    from backfills.throttle import HealthMisuse, evaluate

    def old_style(backfill: Any) -> Health:
        return Health(False, "on-call says stop", critical=True)  # type: ignore[call-arg]

    with pytest.raises(HealthMisuse, match=r"Health\.critical\(reason\)"):
        evaluate([old_style], backfill=None)  # type: ignore[arg-type]
    assert evaluate([lambda backfill: Health.critical("stop")], None).is_critical  # type: ignore[arg-type]
