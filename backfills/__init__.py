"""Online backfills for Django: chunked, checkpointed, resumable data changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Backfill",
    "RowBackfill",
    "UpdateBackfill",
    "SQLBackfill",
    "Parameter",
    "register",
    "run_backfill",
    "RunResult",
    "Outcome",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .base import Backfill, RowBackfill, SQLBackfill, UpdateBackfill
    from .parameters import Parameter
    from .registry import register
    from .runner import Outcome, RunResult, run_backfill


def __getattr__(name: str) -> Any:
    # Imported lazily so that `backfills` can sit in INSTALLED_APPS before apps are ready
    # (base.py and runner.py import the models).
    if name in {"Backfill", "RowBackfill", "UpdateBackfill", "SQLBackfill"}:
        from . import base

        return getattr(base, name)
    if name == "Parameter":
        from .parameters import Parameter

        return Parameter
    if name == "register":
        from .registry import register

        return register
    if name in {"run_backfill", "RunResult", "Outcome"}:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'backfills' has no attribute {name!r}")
