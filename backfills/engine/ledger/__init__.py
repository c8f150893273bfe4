"""The ledger: the one module that writes ``BackfillRun`` rows.

Like Django's ``MigrationRecorder`` beside the ``MigrationExecutor``, the runner does the work
and the ledger records it; the command, the control API (and, next, the admin) only call the
ledger's methods. Every state change is checked against ``TRANSITIONS`` and made with a
conditional ``UPDATE`` (on the states it may come from, and on the owner's token where an
owner writes), so two processes racing for one run cannot both win.

A ``Lease`` is this process's claim on a run: its writes (checkpoint, heartbeat, stop, fail,
complete) all say ``WHERE owner_token = <ours>``, so a process that lost its lease cannot
commit a chunk (the fencing token of DESIGN.md's invariant 3).

A parallel run has no owner: its partitions (``partitions.py``) are leased one by one, and a
``PartitionLease``'s writes say ``WHERE generation = <ours>``. Both leases offer the methods a
chunk step needs (``ChunkLease``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .history import History
from .lease import Lease
from .partitions import PartitionControl, PartitionLease, Partitions
from .runs import (
    RELEASED,
    ControlRow,
    Ledger,
    RunSettings,
    active_key,
    apply_settings,
    error_fields,
)
from .transitions import TRANSITIONS, InvalidTransition, check_transition, sources

Ledger.lease_class = Lease

if TYPE_CHECKING:
    import datetime as dt

    from ...chunking import Window
    from ...models import BackfillRun


class ChunkLease(Protocol):
    """What ``ChunkStep`` writes through: a run's ``Lease`` or a ``PartitionLease``."""

    using: str
    run: BackfillRun
    ledger: Ledger

    @property
    def label(self) -> str: ...
    @property
    def position(self) -> Any: ...
    def checkpoint(
        self, window: Window, cursor: str, processed: int, failed: int, seconds: float
    ) -> dt.datetime: ...
    def checkpointed(
        self,
        window: Window,
        cursor: str,
        processed: int,
        failed: int,
        seconds: float,
        at: dt.datetime,
    ) -> None: ...
    def read_back(self) -> dict[str, Any] | None: ...
    def adopt(self) -> None: ...
    def count_retry(self) -> None: ...


__all__ = [
    "RELEASED",
    "TRANSITIONS",
    "ChunkLease",
    "History",
    "ControlRow",
    "InvalidTransition",
    "Lease",
    "Ledger",
    "PartitionControl",
    "PartitionLease",
    "Partitions",
    "RunSettings",
    "active_key",
    "apply_settings",
    "check_transition",
    "error_fields",
    "sources",
]
