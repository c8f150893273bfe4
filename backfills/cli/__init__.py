"""``manage.py backfill <verb>``: one small module per verb (or group of verbs).

Each verb parses its arguments and renders; what it does goes through ``backfills.control``
(pause, cancel, set, status, ...) and ``backfills.engine.runner`` (run, resume, retry).
``backfills/management/commands/backfill.py`` only dispatches.
"""

from __future__ import annotations

from .base import Subcommand
from .control import CancelCommand, PauseCommand, SetCommand
from .list import ListCommand
from .quarantine import ErrorsCommand, RetryFailedCommand
from .run import ResumeCommand, RunCommand
from .status import StatusCommand
from .verify import VerifyCommand
from .worker import WorkerCommand

#: Every verb, in the order ``backfill --help`` lists them.
SUBCOMMANDS: tuple[type[Subcommand], ...] = (
    ListCommand,
    RunCommand,
    ResumeCommand,
    WorkerCommand,
    VerifyCommand,
    StatusCommand,
    ErrorsCommand,
    RetryFailedCommand,
    SetCommand,
    PauseCommand,
    CancelCommand,
)

__all__ = ["SUBCOMMANDS", "Subcommand"]
