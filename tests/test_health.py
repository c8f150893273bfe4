"""The health verdict cannot be built the wrong way round (no database needed)."""

from __future__ import annotations

from typing import Any

import psutil
import pytest

from backfills.throttle import Health, HostLoad


def test_the_named_constructors_say_what_they_build() -> None:
    assert Health.healthy() == Health(ok=True)
    assert Health.healthy().ok and not Health.healthy().is_critical

    slow = Health.throttle("replica 3s behind")
    assert (slow.ok, slow.reason, slow.is_critical) == (False, "replica 3s behind", False)

    stop = Health.critical("on-call says stop")
    assert (stop.ok, stop.reason, stop.is_critical) == (False, "on-call says stop", True)


def test_a_positional_verdict_is_refused_not_read_as_healthy() -> None:
    # The old dataclass took `ok` first, so this built Health(ok="on-call says stop"): truthy,
    # hence healthy, and the run went on. (Called through Any, as untyped user code would.)
    build: Any = Health
    with pytest.raises(TypeError):
        build("on-call says stop", critical=True)
    with pytest.raises(TypeError):
        build("on-call says stop")
    with pytest.raises(TypeError):
        build(ok="no")  # only a real bool says healthy or not


def test_a_critical_verdict_cannot_also_be_healthy() -> None:
    with pytest.raises(ValueError, match="critical"):
        Health(ok=True, is_critical=True)


@pytest.mark.parametrize("value", [None, True])
def test_coerce_reads_none_and_true_as_healthy(value: Any) -> None:
    verdict = Health.coerce(value, "queue_depth")
    assert verdict.ok and not verdict.is_critical


def test_coerce_reads_false_as_throttle_naming_the_check() -> None:
    verdict = Health.coerce(False, "queue_depth")
    assert (verdict.ok, verdict.is_critical) == (False, False)
    assert verdict.reason == "queue_depth says not now"


def test_coerce_reads_a_string_as_throttle_with_that_reason() -> None:
    verdict = Health.coerce("queue 5000 deep", "queue_depth")
    assert verdict == Health.throttle("queue 5000 deep")
    assert not verdict.is_critical  # a plain string never pauses the run


def test_coerce_keeps_a_verdict_as_it_is() -> None:
    stop = Health.critical("disk 95% full")
    assert Health.coerce(stop, "disk") is stop


def test_host_load_builds_its_verdicts_with_the_named_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = {"percent": 10.0}
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: cpu["percent"])
    check = HostLoad(max_cpu=80, critical_cpu=95)
    backfill: Any = None  # HostLoad reads the host, not the backfill

    assert check(backfill) == Health.healthy()
    cpu["percent"] = 85.0
    assert check(backfill) == Health.throttle("host CPU 85% >= 80%")
    cpu["percent"] = 97.0
    verdict = check(backfill)
    assert verdict.is_critical and not verdict.ok
    assert verdict.reason == "host CPU 97% >= critical 95%"
