"""What every verb shares: its options, the console, argument types, and error handling."""

from __future__ import annotations

import argparse
import getpass
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from django.core.management.base import CommandError, OutputWrapper
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from rich.console import Console

from ..exceptions import Abort, BackfillError
from ..parameters import parse_parameters, split_assignments

if TYPE_CHECKING:
    from ..base import Backfill

#: Console width when output is not a terminal (a pipe, a log, a test) and COLUMNS is unset:
#: wide enough that tables keep every column.
PIPE_WIDTH = 160


class Subcommand:
    """One verb of ``manage.py backfill``: declares its arguments and renders its result."""

    name: ClassVar[str]
    help: ClassVar[str]
    #: Whether the verb takes --database more than once.
    takes_shards: ClassVar[bool] = False

    def __init__(
        self,
        *,
        stdout: OutputWrapper,
        stderr: OutputWrapper,
        console: Console,
        database: str,
        verbosity: int,
        databases: list[str] | None = None,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.console = console
        self.database = database
        #: Every --database given (several only for the verbs that take shards).
        self.databases = databases or [database]
        self.verbosity = verbosity

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare the verb's own arguments (the common ones are added for every verb)."""

    def handle(self, **options: Any) -> None:
        raise NotImplementedError

    def write(self, text: str) -> None:
        self.stdout.write(text)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every verb takes, after the verb as well as before it."""
    parser.add_argument(
        "--database",
        default=DEFAULT_DB_ALIAS,
        action=DatabaseAction,
        help='Database alias holding the table and the checkpoints (default: "default"). '
        "`run --workers N` and `worker` take it more than once (shards): one run per alias.",
    )
    parser.set_defaults(databases=None)
    parser.add_argument(
        "--no-input",
        "--noinput",
        action="store_false",
        dest="interactive",
        help="Never prompt.",
    )
    # Django's own options live on the main parser and must precede the subcommand; these
    # let `backfill list --settings x` work too. SUPPRESS keeps a main-parser value intact.
    # (--settings and --pythonpath are acted on by manage.py before the command parses.)
    suppressed = argparse.SUPPRESS
    parser.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=suppressed)
    parser.add_argument("--settings", default=suppressed, help=suppressed)
    parser.add_argument("--pythonpath", default=suppressed, help=suppressed)
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        parser.add_argument(flag, action="store_true", default=suppressed, help=suppressed)


class DatabaseAction(argparse.Action):
    """``--database`` given once or more: ``database`` is the first alias, ``databases``
    every alias given, in order, without repeats."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given: list[str] = getattr(namespace, "databases", None) or []
        if values not in given:
            given.append(values)
        namespace.databases = given
        namespace.database = given[0]


def make_console(options: dict[str, Any], stdout: TextIO | None) -> Console:
    """A rich console on the command's stdout, honouring --no-color and --force-color
    (django-rich's ``RichCommand.make_rich_console()``): given the stream itself, not
    Django's OutputWrapper, whose write() appends a newline."""
    file = stdout or sys.stdout
    force_color = bool(options.get("force_color"))
    is_tty = bool(getattr(file, "isatty", None) and file.isatty())
    width = None
    if not (is_tty or force_color) and not _columns_set():
        width = PIPE_WIDTH
    return Console(
        file=file,
        force_terminal=True if force_color else None,
        no_color=bool(options.get("no_color")),
        highlight=False,
        width=width,
    )


def _columns_set() -> bool:
    import os

    return os.environ.get("COLUMNS", "").isdigit()


# -- argument types --------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(*, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a number of seconds, by ``control.check_seconds``'s one rule."""
    from ..control import check_seconds

    def parse(text: str) -> float:
        try:
            return check_seconds("the value", text, allow_zero=allow_zero)
        except BackfillError as exc:
            raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None

    parse.__name__ = "seconds"  # argparse names the type in some messages
    return parse


def duty(text: str) -> float:
    """An argparse type for ``--max-duty``: a fraction of the time in (0, 1]."""
    from .. import profiles

    try:
        value = profiles.check_duty(float(text), "the value")
    except (ValueError, BackfillError):
        raise argparse.ArgumentTypeError(
            f"expected a fraction of the time in (0, 1], got {text!r}"
        ) from None
    return 1.0 if value is None else value


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile`` and ``--max-duty``, for ``run`` and ``set``."""
    from .. import profiles

    parser.add_argument(
        "--profile",
        choices=profiles.NAMES,
        help="How hard to push: gentle (short chunks, a tight blocking guard, working half "
        "the time), balanced (the settings; the default) or fast.",
    )
    parser.add_argument(
        "--max-duty",
        type=duty,
        metavar="FRACTION",
        help="Work at most this fraction of the time, resting in proportion to each chunk "
        "(0.5: rest as long as the chunk took; 1: no rest).",
    )


def add_param_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A parameter the backfill declares (repeatable); `backfill list` shows them.",
    )


def given_parameters(backfill_cls: type[Backfill], assignments: list[str]) -> dict[str, str]:
    """The ``--param`` values, checked against the backfill's declared parameters before
    anything else happens (a typo must not pass because the run is already done). Required
    parameters left out are not an error here: a resumed run keeps its own."""
    given = split_assignments(assignments)
    declared = {
        key: parameter
        for key, parameter in backfill_cls.parameters.items()
        if key in given or not parameter.required
    }
    parse_parameters(backfill_cls.name or "", declared, given)
    return given


def who() -> str:
    """``user@host``, recorded as who paused or cancelled a run."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def asks(interactive: bool) -> bool:
    """Whether questions are asked: not with --no-input, nor when stdin is not a terminal."""
    return interactive and sys.stdin.isatty()


def confirm(question: str, interactive: bool) -> bool:
    """Ask on a terminal; True without asking when ``asks()`` says no."""
    if not asks(interactive):
        return True
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


# -- errors ----------------------------------------------------------------------------------


def check_database(alias: str) -> None:
    if alias not in connections:
        raise CommandError(f"Unknown database alias {alias!r}.")


def not_installed_message(alias: str) -> str:
    """What ``run`` says before ``migrate``; every verb says the same."""
    return (
        f"The backfills tables are not installed on database {alias!r}; "
        f"run `manage.py migrate backfills --database {alias}`."
    )


def tables_missing(alias: str) -> bool:
    """Whether the backfills tables are absent on *alias* (False when we cannot tell)."""
    from ..models import BackfillRun

    try:
        with connections[alias].cursor() as cursor:
            tables = connections[alias].introspection.table_names(cursor)
    except DatabaseError:
        return False
    return BackfillRun._meta.db_table not in tables


def as_command_error(exc: Exception, alias: str) -> CommandError:
    """A user-facing error for a BackfillError or a DatabaseError: no traceback."""
    if isinstance(exc, BackfillError):
        return CommandError(str(exc))
    if tables_missing(alias):
        return CommandError(not_installed_message(alias))
    # Connection refused, server gone away: say which database and what it said.
    return CommandError(f"Database {alias!r} error: {type(exc).__name__}: {exc}".strip())


# -- signals ---------------------------------------------------------------------------------

#: Closing the terminal (SIGHUP) or `kill` (SIGTERM) stop a run like Ctrl-C does.
STOP_SIGNALS = tuple(
    sig
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
    if sig is not None  # no SIGHUP on Windows
)


def abort(signum: int) -> None:
    """The second signal: abort the chunk in progress (it rolls back)."""
    raise Abort(signum)


@contextmanager
def stop_signals(first: Callable[[int], None], second: Callable[[int], None]) -> Iterator[None]:
    """Call *first(signum)* on the first SIGINT/SIGTERM/SIGHUP and *second(signum)* on any
    later one, restoring the previous handlers afterwards (none are installed outside the
    main thread, e.g. for call_command from a worker thread)."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        (first if len(received) == 1 else second)(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        for sig in previous:
            signal.signal(sig, handler)
    except ValueError:
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
