"""Who owns a run: this process's identity and the rule that judges another owner alive."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from django.utils import timezone

from ..display import format as fmt


class Owned(Protocol):
    """What the lease rules read: a run's or a partition's owner columns."""

    @property
    def owner_token(self) -> str | None: ...
    @property
    def owner_host(self) -> str: ...
    @property
    def owner_pid(self) -> int | None: ...
    @property
    def heartbeat_at(self) -> dt.datetime | None: ...


@dataclass(frozen=True)
class Owner:
    """This process as a run's owner: a fresh token (the fencing token every checkpoint is
    conditional on), the host and the pid."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def pid_alive(pid: int) -> bool:
    """Whether a process with *pid* exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_here(run: Owned) -> int | None:
    """The owner's pid when the owner is a process on this host, else None."""
    if run.owner_token and run.owner_pid and run.owner_host == socket.gethostname():
        return run.owner_pid
    return None


def owner_pid_alive_here(run: Owned) -> bool:
    """Whether *run*'s owner is a process on this host that still exists."""
    pid = _pid_here(run)
    return pid is not None and pid_alive(pid)


def owner_gone_here(run: Owned) -> bool:
    """Whether *run*'s owner was on this host and its pid no longer exists."""
    pid = _pid_here(run)
    return pid is not None and not pid_alive(pid)


def owner_alive(run: Owned, lease_seconds: float) -> bool:
    """Whether a live process holds *run*'s lease, by the rule a claim applies: an owner on
    this host whose pid is gone is dead at once; otherwise the lease holds while the heartbeat
    is younger than *lease_seconds* (a live pid with a stale heartbeat may be stopped, or a
    reused pid, and its run is taken over)."""
    if not run.owner_token or run.heartbeat_at is None:
        return False
    if owner_gone_here(run):
        return False
    return timezone.now() - run.heartbeat_at < timedelta(seconds=lease_seconds)


def describe_owner(run: Owned) -> str:
    """``host web-1, pid 4242, since ... (last heartbeat 3s ago)``."""
    owned_since = getattr(run, "owned_since", None)
    since = timezone.localtime(owned_since).isoformat(timespec="seconds") if owned_since else "?"
    return (
        f"host {run.owner_host}, pid {run.owner_pid}, since {since} (last heartbeat "
        f"{fmt.age(run.heartbeat_at)})"
    )
