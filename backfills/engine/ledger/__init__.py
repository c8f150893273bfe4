"""The ledger: the one module that writes ``BackfillRun`` rows.

Like Django's ``MigrationRecorder`` beside the ``MigrationExecutor``, the runner does the work
and the ledger records it; the command, the control API (and, next, the admin) only call the
ledger's methods. Every state change is checked against ``TRANSITIONS`` and made with a
conditional ``UPDATE`` (on the states it may come from, and on the owner's token where an
owner writes), so two processes racing for one run cannot both win.

A ``Lease`` is this process's claim on a run: its writes (checkpoint, heartbeat, stop, fail,
complete) all say ``WHERE owner_token = <ours>``, so a process that lost its lease cannot
commit a chunk (the fencing token of DESIGN.md's invariant 3).
"""

from __future__ import annotations

from .lease import Lease
from .runs import RELEASED, ControlRow, Ledger, RunSettings, active_key, error_fields
from .transitions import TRANSITIONS, InvalidTransition, check_transition, sources

Ledger.lease_class = Lease

__all__ = [
    "RELEASED",
    "TRANSITIONS",
    "ControlRow",
    "InvalidTransition",
    "Lease",
    "Ledger",
    "RunSettings",
    "active_key",
    "check_transition",
    "error_fields",
    "sources",
]
