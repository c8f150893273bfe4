"""``backfill run`` (and ``--dry-run``) and ``backfill resume``: a run in this process."""

from __future__ import annotations

import argparse
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.core.management.base import CommandError

from .. import conf, control
from ..base import Backfill
from ..display import format as fmt
from ..display.progress import JsonProgress, PlainProgress, RichProgress
from ..display.tables import changes_table, dry_run_lines
from ..dryrun import dry_run
from ..engine.runner import Outcome, Runner, RunOptions
from ..events import Listener
from ..exceptions import Abort
from ..registry import registry
from .base import (
    Subcommand,
    abort,
    add_param_argument,
    add_profile_arguments,
    confirm,
    given_parameters,
    positive_int,
    seconds,
    stop_signals,
    who,
)

#: Exit status when a run stopped on a signal: 128 + its number (130, 143, 129 for SIGHUP),
#: as shells report a process ended by that signal.
SIGNAL_EXIT_BASE = 128
#: Exit status when a critical health threshold paused the run (sysexits' EX_TEMPFAIL).
CRITICAL_EXIT = 75


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="Backfill name, e.g. blog.populate_post_slugs.")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="A fixed number of rows per chunk (turns adaptive sizing off).",
    )
    parser.add_argument(
        "--target-chunk-time",
        type=seconds(),
        help="Seconds a chunk should take; chunk sizes adapt toward it (default: the "
        "profile's, 0.5 under balanced).",
    )
    add_profile_arguments(parser)
    parser.add_argument("--pause-file", help="Throttle (wait) while this file exists, like pt-osc.")
    parser.add_argument(
        "--reverse", action="store_true", help="Run the backfill's reverse (its own run)."
    )
    add_param_argument(parser)
    parser.add_argument(
        "--input",
        metavar="PATH",
        help="The file an input backfill reads (a CSVBackfill): the same as --param input=PATH, "
        "with the path made absolute. Not standard input: a resume reads the file again.",
    )
    parser.add_argument(
        "--exact-count",
        action="store_true",
        help="COUNT the rows to walk even on large tables (default: statistics there).",
    )
    parser.add_argument(
        "--sleep", type=seconds(allow_zero=True), help="Seconds to wait between chunks."
    )
    parser.add_argument(
        "--max-chunks", type=positive_int, help="Stop (paused, resumable) after this many chunks."
    )
    parser.add_argument(
        "--limit", type=positive_int, help="Stop (paused, resumable) after this many rows."
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="Take over the run from an owner you know is gone although its lease has not "
        "expired yet (never from a live process on this host).",
    )
    parser.add_argument(
        "--progress",
        choices=["auto", "rich", "plain", "json", "none"],
        default="auto",
        help="auto: a live bar on a terminal, plain lines otherwise.",
    )
    parser.add_argument(
        "--progress-interval",
        type=seconds(allow_zero=True),
        help="Seconds between plain progress lines (default: PROGRESS_INTERVAL setting).",
    )
    from .worker import add_parallel_arguments

    add_parallel_arguments(parser)


def input_parameter(
    backfill_cls: type[Backfill], path: str | None, parameters: dict[str, str]
) -> None:
    """Put ``--input PATH`` into *parameters* as ``input``, refusing what cannot be read
    again from a checkpoint."""
    if path is None:
        return
    if "input" not in backfill_cls.parameters:
        raise CommandError(f"Backfill {backfill_cls.name} reads no input file (--input).")
    if path == "-":
        raise CommandError(
            "--input - (standard input) cannot be read again from a checkpoint; save it to a "
            "file and pass its path."
        )
    if not os.path.isfile(path):
        raise CommandError(f"--input {path}: no such file.")
    parameters["input"] = os.path.abspath(path)


class _RunVerb(Subcommand):
    """Runs the backfill here with a live display, pausing cleanly on signals."""

    def run(
        self,
        backfill_cls: type[Backfill],
        options: dict[str, Any],
        parameters: dict[str, str],
        restart: bool,
    ) -> None:
        run_options = RunOptions(
            batch_size=options.get("batch_size"),
            target_chunk_time=options.get("target_chunk_time"),
            pause_file=options.get("pause_file"),
            exact_count=options.get("exact_count", False),
            sleep=options.get("sleep"),
            profile=options.get("profile"),
            max_duty=options.get("max_duty"),
            max_chunks=options.get("max_chunks"),
            limit=options.get("limit"),
            restart=restart,
            force=options.get("force", False),
            reverse=options.get("reverse", False),
            parameters=parameters,
            started_by=who(),
            via="command",
        )
        workers = self.parallel_workers(backfill_cls, options, restart)
        if workers is not None:
            serial_only = [
                flag
                for flag, key in (
                    ("--limit", "limit"),
                    ("--max-chunks", "max_chunks"),
                    ("--pause-file", "pause_file"),
                )
                if options.get(key)
            ]
            if serial_only:
                raise CommandError(
                    f"{', '.join(serial_only)} apply to a run in this process, not to a "
                    "parallel run: stop one with `backfill pause`, and give its workers a "
                    "pause file with the PAUSE_FILE setting."
                )
        elif options.get("max_workers") or options.get("enqueue"):
            raise CommandError("--max-workers and --enqueue go with --workers N.")
        if workers is not None:
            from .worker import run_parallel

            run_parallel(
                self,
                backfill_cls,
                {**options, "workers": workers},
                run_options,
                lambda using: self.display(options, using),
            )
            return
        if len(self.databases) > 1:
            raise CommandError(
                "Several --database need --workers N: one parallel run per alias, drained by "
                "the same workers."
            )
        display = self.display(options)
        runner = Runner(backfill_cls, using=self.database, options=run_options)
        runner.listeners.append(display)
        live = display if isinstance(display, RichProgress) else nullcontext()
        try:  # around the handlers too: a second signal may land as they are restored
            with live, self.signals(runner):
                result = runner.run()
        except Abort as exc:
            self.stderr.write(
                f"Aborted by a second {fmt.signal_name(exc.signum)}: the open chunk was "
                "rolled back; the run is paused at its last committed checkpoint."
            )
            raise SystemExit(SIGNAL_EXIT_BASE + exc.signum) from None
        if result.outcome is Outcome.ALREADY_COMPLETED:
            run = result.run
            self.write(
                f"{run.label} already completed (run #{run.pk}, finished "
                f"{fmt.iso_timestamp(run.finished_at)}). Pass --restart to run it again from "
                "the first row."
            )
        elif result.signum is not None:
            raise SystemExit(SIGNAL_EXIT_BASE + result.signum)
        elif result.critical:
            self.stderr.write(f"Paused on a critical health threshold: {result.reason}")
            raise SystemExit(CRITICAL_EXIT)

    def parallel_workers(
        self, backfill_cls: type[Backfill], options: dict[str, Any], restart: bool
    ) -> int | None:
        """How many workers to run: --workers, or the unfinished run's own number when it is
        a parallel run; None for a run in this process."""
        if options.get("workers"):
            return int(options["workers"])
        if restart:
            return None
        live = control.active_run(
            backfill_cls, using=self.database, reverse=options.get("reverse", False)
        )
        return live.workers if live is not None and live.workers is not None else None

    def display(self, options: dict[str, Any], using: str | None = None) -> Listener:
        """The progress display; with several --database, one per alias (*using*): plain
        lines prefixed with the alias instead of a live bar."""
        mode = options.get("progress", "auto")
        if self.verbosity == 0 and mode == "auto":
            mode = "none"
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        prefix = f"[{using}] " if len(self.databases) > 1 and using is not None else ""
        if prefix and mode == "rich":
            mode = "plain"  # one live bar per run cannot share a terminal

        def write(text: str) -> None:
            self.stdout.write(prefix + text)

        if mode == "rich":
            return RichProgress(self.console)
        if mode == "json":
            return JsonProgress(write)
        if mode == "plain":
            interval = options.get("progress_interval")
            if interval is None:
                interval = 0.0 if self.verbosity >= 2 else float(conf.get("PROGRESS_INTERVAL"))
            return PlainProgress(write, interval)
        return lambda event: None

    def signals(self, runner: Runner) -> AbstractContextManager[None]:
        """First SIGINT/SIGTERM/SIGHUP: finish the chunk and pause. Second: abort the chunk."""

        def first(signum: int) -> None:
            name = fmt.signal_name(signum)
            runner.request_stop(f"interrupted by {name}", signum)
            self.stderr.write(
                f"\n{name} received: stopping after the current chunk commits "
                "(send it again to abort the chunk now)."
            )

        return stop_signals(first, abort)


class RunCommand(_RunVerb):
    name = "run"
    takes_shards = True
    help = "Run a backfill, resuming from its checkpoint if it was stopped."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_run_arguments(parser)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Process a few chunks in a transaction that is rolled back (from the unfinished "
            "run's checkpoint, if any); show samples of changed values, the chunk query's plan "
            "and a projected duration.",
        )
        parser.add_argument(
            "--dry-run-chunks", type=positive_int, default=3, help="Chunks a dry run processes."
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="Start a new run from the first row, even if the latest one completed or was "
            "cancelled (an unfinished run is cancelled first).",
        )

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        parameters = given_parameters(backfill_cls, options["param"])
        input_parameter(backfill_cls, options.get("input"), parameters)
        if options["dry_run"]:
            self.dry_run(backfill_cls, options, parameters)
            return
        restart = options["restart"]
        question = (
            f"Start {backfill_cls.name} again from the first row? Rows already processed "
            "are processed again."
        )
        if restart and not confirm(question, options["interactive"]):
            raise CommandError("Restart aborted.")
        self.run(backfill_cls, options, parameters, restart=restart)

    def dry_run(
        self, backfill_cls: type[Backfill], options: dict[str, Any], parameters: dict[str, str]
    ) -> None:
        reverse = options["reverse"]
        # Like the run would: from the unfinished run's checkpoint, unless --restart.
        label = f"{backfill_cls.name} (reverse)" if reverse else backfill_cls.name
        unfinished = None
        if not options["restart"]:
            unfinished = next(
                (
                    run
                    for run in control.status([backfill_cls], using=self.database)
                    if run.label == label and not run.is_final
                ),
                None,
            )
        report = dry_run(
            backfill_cls,
            using=self.database,
            chunks=options["dry_run_chunks"],
            batch_size=options.get("batch_size") or backfill_cls.batch_size or 1000,
            reverse=reverse,
            parameters=parameters or (unfinished.parameters if unfinished else {}),
            cursor=unfinished.cursor if unfinished else None,
            horizon=unfinished.horizon if unfinished else None,
        )
        for line in dry_run_lines(report, reverse, unfinished.pk if unfinished else None):
            self.write(line)
        if report.changes:
            self.console.print(changes_table(self.console, report.changes))
        else:
            self.write("No sampled row changed.")
        if report.explain:  # an input walk has no chunk query
            self.write("Chunk query plan:")
            self.write(report.explain)


class ResumeCommand(_RunVerb):
    name = "resume"
    takes_shards = True
    help = "Continue a paused or failed run (withdraws a pending pause request)."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_run_arguments(parser)

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        parameters = given_parameters(backfill_cls, options["param"])
        input_parameter(backfill_cls, options.get("input"), parameters)
        # Raises NoActiveRun (which says to use `run --restart`) when nothing is unfinished.
        withdrawn = control.withdraw_pause(
            backfill_cls, using=self.database, reverse=options["reverse"], by=who(), via="command"
        )
        if withdrawn is not None:
            self.write(withdrawn.message)
            return
        control.note(
            backfill_cls,
            "resume",
            using=self.database,
            reverse=options["reverse"],
            by=who(),
            via="command",
            message="resumed by `backfill resume`",
        )
        self.run(backfill_cls, options, parameters, restart=False)
