"""Health checks asked between chunks: while any says "not now", the runner waits.

A check is any callable taking the Backfill instance and returning a ``Health`` (or None / True
for healthy, False or a string for "throttle, with this reason"). Built in: host CPU and memory
(psutil), replica lag on PostgreSQL and MariaDB/MySQL, and a pause file. Projects add their own
with ``BACKFILLS["HEALTH_CHECKS"] = ["myproject.health.queue_depth", ...]`` or by overriding
``Backfill.get_health_checks()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil
from django.db import connections
from django.utils.module_loading import import_string

from . import conf
from .db import vendor_for
from .exceptions import BackfillConfigurationError

if TYPE_CHECKING:
    from .base import Backfill


class HealthMisuse(BackfillConfigurationError, TypeError, ValueError):
    """``Health`` built the old, ambiguous way; the run fails with this message rather than
    reading the verdict wrong (or throttling forever on a check that cannot be built)."""


@dataclass(frozen=True, init=False)
class Health:
    """A check's verdict. Build it with ``Health.healthy()``, ``Health.throttle(reason)`` (wait
    and ask again) or ``Health.critical(reason)`` (pause the run); a check may also return
    None/True (healthy), False or a reason string (throttle).

    The fields are keyword-only so that ``Health("reason", critical=True)`` cannot pass for a
    healthy verdict."""

    ok: bool
    reason: str = ""
    is_critical: bool = False

    def __init__(
        self,
        *args: object,
        ok: bool | None = None,
        reason: str = "",
        is_critical: bool = False,
        **extra: object,
    ) -> None:
        if args or extra:
            raise HealthMisuse(
                f"Health{args!r} with {sorted(extra)}: build a verdict with Health.healthy(), "
                "Health.throttle(reason) or Health.critical(reason)."
            )
        if not isinstance(ok, bool):
            raise HealthMisuse(f"Health.ok must be a bool, got {ok!r}")
        if is_critical and ok:
            raise HealthMisuse("a critical verdict cannot be healthy")
        object.__setattr__(self, "ok", ok)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "is_critical", is_critical)

    @classmethod
    def healthy(cls) -> Health:
        """All is well: go on."""
        return HEALTHY

    @classmethod
    def throttle(cls, reason: str) -> Health:
        """Not now: the runner waits (visibly, with *reason*) and asks again."""
        return cls(ok=False, reason=reason)

    @classmethod
    def critical(cls, reason: str) -> Health:
        """Stop: the run is paused (resumable) and the command exits 75."""
        return cls(ok=False, reason=reason, is_critical=True)

    @classmethod
    def coerce(cls, value: object, name: str) -> Health:
        """A check's return value as a verdict."""
        if isinstance(value, Health):
            return value
        if value is None or value is True:
            return HEALTHY
        if value is False:
            return cls.throttle(f"{name} says not now")
        return cls.throttle(str(value))


HEALTHY = Health(ok=True)
HealthCheck = Callable[["Backfill"], Any]


class HostLoad:
    """CPU and memory use of this host (where the runner runs: often the app or DB host)."""

    def __init__(
        self,
        max_cpu: float | None = None,
        max_memory: float | None = None,
        critical_cpu: float | None = None,
    ) -> None:
        self.max_cpu = max_cpu
        self.max_memory = max_memory
        self.critical_cpu = critical_cpu
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless

    def __call__(self, backfill: Backfill) -> Health:
        cpu = psutil.cpu_percent(interval=None)
        if self.critical_cpu is not None and cpu >= self.critical_cpu:
            return Health.critical(f"host CPU {cpu:.0f}% >= critical {self.critical_cpu:g}%")
        if self.max_cpu is not None and cpu >= self.max_cpu:
            return Health.throttle(f"host CPU {cpu:.0f}% >= {self.max_cpu:g}%")
        if self.max_memory is not None:
            memory = psutil.virtual_memory().percent
            if memory >= self.max_memory:
                return Health.throttle(f"host memory {memory:.0f}% >= {self.max_memory:g}%")
        return HEALTHY


class ReplicaLag:
    """Replication lag: on a PostgreSQL primary, the worst ``pg_stat_replication.replay_lag``;
    on any alias listed in ``replicas``, that server's own replay delay (PostgreSQL) or
    ``Seconds_Behind_Master`` (MariaDB/MySQL)."""

    def __init__(
        self, max_lag: float, critical_lag: float | None = None, replicas: Iterable[str] = ()
    ) -> None:
        self.max_lag = max_lag
        self.critical_lag = critical_lag
        self.replicas = list(replicas)

    def __call__(self, backfill: Backfill) -> Health:
        lags: list[tuple[str, float]] = []
        primary = connections[backfill.using]
        lag = vendor_for(primary).primary_replica_lag(primary)
        if lag is not None:
            lags.append((f"replicas of {backfill.using!r}", lag))
        for alias in self.replicas:
            lag = replica_delay(alias)
            if lag is None:
                return Health.throttle(f"replica {alias!r} reports no replication (stopped?)")
            lags.append((f"replica {alias!r}", lag))
        if not lags:
            return HEALTHY
        where, worst = max(lags, key=lambda item: item[1])
        if self.critical_lag is not None and worst >= self.critical_lag:
            return Health.critical(f"{where} lag {worst:.1f}s >= critical {self.critical_lag:g}s")
        if worst >= self.max_lag:
            return Health.throttle(f"{where} lag {worst:.1f}s >= {self.max_lag:g}s")
        return HEALTHY


def replica_delay(alias: str) -> float | None:
    """Seconds the replica behind *alias* lags its primary (None: not replicating)."""
    connection = connections[alias]
    return vendor_for(connection).replica_delay(connection)


class PauseFile:
    """Throttle while a file exists (like pt-online-schema-change's --pause-file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, backfill: Backfill) -> Health:
        if os.path.exists(self.path):
            return Health.throttle(f"pause file {self.path} exists")
        return HEALTHY


def default_checks(pause_file: str | None = None) -> list[HealthCheck]:
    """The checks the settings ask for, plus the dotted-path ones in HEALTH_CHECKS."""
    checks: list[HealthCheck] = []
    max_cpu = conf.get("MAX_CPU_PERCENT")
    max_memory = conf.get("MAX_MEMORY_PERCENT")
    critical_cpu = conf.get("CRITICAL_CPU_PERCENT")
    if max_cpu is not None or max_memory is not None or critical_cpu is not None:
        checks.append(HostLoad(max_cpu, max_memory, critical_cpu))
    max_lag = conf.get("MAX_REPLICA_LAG")
    if max_lag is not None:
        checks.append(
            ReplicaLag(max_lag, conf.get("CRITICAL_REPLICA_LAG"), conf.get("REPLICA_DATABASES"))
        )
    pause_file = pause_file or conf.get("PAUSE_FILE")
    if pause_file:
        checks.append(PauseFile(pause_file))
    for path in conf.get("HEALTH_CHECKS"):
        check = import_string(path) if isinstance(path, str) else path
        checks.append(check)
    return checks


def evaluate(checks: Iterable[HealthCheck], backfill: Backfill) -> Health:
    """The first unhealthy verdict (critical ones first), or HEALTHY."""
    verdicts = []
    for check in checks:
        name = getattr(check, "__name__", type(check).__name__)
        try:
            verdict = Health.coerce(check(backfill), name)
        except HealthMisuse:
            raise  # a mistake in the check's code: fail the run and say so
        except Exception as exc:
            # A check that cannot answer (its database connection dropped, say) means "not
            # now", not "fail the run": the wait is visible with this reason, and the next
            # evaluation starts on a fresh connection.
            connection = connections[backfill.using]
            if connection.connection is not None and not connection.is_usable():
                connection.close()
            verdict = Health.throttle(f"health check {name} failed: {type(exc).__name__}: {exc}")
        if verdict.is_critical:
            return verdict
        verdicts.append(verdict)
    return next((v for v in verdicts if not v.ok), HEALTHY)
