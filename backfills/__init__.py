"""Online backfills for Django: chunked, checkpointed, resumable data changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Backfill",
    "RowBackfill",
    "UpdateBackfill",
    "SQLBackfill",
    "InputBackfill",
    "CSVBackfill",
    "Parameter",
    "register",
    "run_backfill",
    "RunResult",
    "Outcome",
    "Health",
    "pause",
    "resume",
    "cancel",
    "change_settings",
    "status",
    "backfill_state",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .base import Backfill
    from .control import backfill_state, cancel, change_settings, pause, resume, status
    from .engine.runner import Outcome, RunResult, run_backfill
    from .inputs import CSVBackfill, InputBackfill
    from .kinds import RowBackfill, SQLBackfill, UpdateBackfill
    from .parameters import Parameter
    from .registry import register
    from .throttle import Health


def __getattr__(name: str) -> Any:
    # Imported lazily so that `backfills` can sit in INSTALLED_APPS before apps are ready
    # (base.py and runner.py import the models).
    if name == "Backfill":
        from .base import Backfill

        return Backfill
    if name in {"RowBackfill", "UpdateBackfill", "SQLBackfill"}:
        from . import kinds

        return getattr(kinds, name)
    if name in {"InputBackfill", "CSVBackfill"}:
        from . import inputs

        return getattr(inputs, name)
    if name == "Parameter":
        from .parameters import Parameter

        return Parameter
    if name == "register":
        from .registry import register

        return register
    if name in {"run_backfill", "RunResult", "Outcome"}:
        from .engine import runner

        return getattr(runner, name)
    if name in {"pause", "resume", "cancel", "change_settings", "status", "backfill_state"}:
        from . import control

        return getattr(control, name)
    if name == "Health":
        from .throttle import Health

        return Health
    raise AttributeError(f"module 'backfills' has no attribute {name!r}")
