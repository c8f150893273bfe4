"""``manage.py backfill list|run|status|pause|resume|cancel``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import F
from django.utils import timezone
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backfills import conf
from backfills.base import Backfill
from backfills.dryrun import dry_run
from backfills.events import Listener
from backfills.exceptions import Abort, BackfillError, CheckFailed
from backfills.models import BackfillRun, QuarantinedRow, describe_age
from backfills.parameters import from_json, parse_parameters, split_assignments
from backfills.progress import (
    JsonProgress,
    PlainProgress,
    RichProgress,
    format_duration,
    format_rate,
)
from backfills.registry import registry
from backfills.runner import (
    Outcome,
    Runner,
    RunOptions,
    check_requirements,
    owner_alive,
    retry_quarantined,
)

State = BackfillRun.State

#: Exit status when a run stopped on SIGINT/SIGTERM: 128 + the signal number (130, 143),
#: as shells report a process ended by that signal.
SIGNAL_EXIT_BASE = 128
#: Exit status when a critical health threshold paused the run (sysexits' EX_TEMPFAIL).
CRITICAL_EXIT = 75


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


class Command(BaseCommand):
    help = "Run and inspect online backfills: chunked, checkpointed, resumable data changes."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(
            dest="subcommand", required=True, title="subcommands", metavar="SUBCOMMAND"
        )

        list_parser = subparsers.add_parser("list", help="Registered backfills and their state.")
        self._common(list_parser)

        run = subparsers.add_parser(
            "run", help="Run a backfill, resuming from its checkpoint if it was stopped."
        )
        run.add_argument("name", help="Backfill name, e.g. blog.populate_post_slugs.")
        self._common(run)
        self._run_options(run)
        run.add_argument(
            "--dry-run",
            action="store_true",
            help="Process a few chunks in a transaction that is rolled back; show samples of "
            "changed values, the chunk query's plan and a projected duration.",
        )
        run.add_argument(
            "--dry-run-chunks", type=positive_int, default=3, help="Chunks a dry run processes."
        )
        run.add_argument(
            "--restart",
            action="store_true",
            help="Start a new run from the first row, even if the latest one completed or was "
            "cancelled (an unfinished run is cancelled first).",
        )

        resume = subparsers.add_parser(
            "resume",
            help="Continue a paused or failed run (withdraws a pending pause request).",
        )
        resume.add_argument("name")
        self._common(resume)
        self._run_options(resume)

        verify = subparsers.add_parser(
            "verify", help="Count rows still needing work and run the backfill's post_check."
        )
        verify.add_argument("name")
        verify.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
        self._common(verify)

        status = subparsers.add_parser("status", help="Runs with progress, rate and errors.")
        status.add_argument("names", nargs="*", metavar="NAME")
        status.add_argument("--json", action="store_true", help="Machine-readable output.")
        status.add_argument(
            "--all", action="store_true", help="Every run, not only the latest per backfill."
        )
        self._common(status)

        errors = subparsers.add_parser(
            "errors", help="Rows a quarantining backfill set aside, with their errors."
        )
        errors.add_argument("name")
        errors.add_argument("--json", action="store_true", help="Machine-readable output.")
        errors.add_argument(
            "--all", action="store_true", help="Include rows already resolved by retry-failed."
        )
        self._common(errors)

        retry = subparsers.add_parser(
            "retry-failed", help="Process the quarantined rows again (after fixing the cause)."
        )
        retry.add_argument("name")
        self._common(retry)

        set_parser = subparsers.add_parser(
            "set", help="Change a run's chunk size, target time or sleep, even while it runs."
        )
        set_parser.add_argument("name")
        size = set_parser.add_mutually_exclusive_group()
        size.add_argument("--batch-size", type=positive_int, help="A fixed chunk size.")
        size.add_argument(
            "--adaptive", action="store_true", help="Size chunks toward the target time again."
        )
        set_parser.add_argument("--target-chunk-time", type=positive_float)
        set_parser.add_argument("--sleep", type=non_negative_float)
        self._common(set_parser)

        for action, text in (
            ("pause", "Ask the running process to stop at its next chunk boundary."),
            ("cancel", "Stop the run for good; a new run needs `run --restart`."),
        ):
            sub = subparsers.add_parser(action, help=text)
            sub.add_argument("name")
            self._common(sub)

    def _common(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='Database alias holding the table and the checkpoints (default: "default").',
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Never prompt.",
        )
        # Django's own options live on the main parser and must precede the subcommand; these
        # let `backfill run NAME -v 2` work too. SUPPRESS keeps a main-parser value intact.
        parser.add_argument(
            "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=argparse.SUPPRESS
        )
        parser.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS)
        parser.add_argument("--force-color", action="store_true", default=argparse.SUPPRESS)
        parser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS)

    def _run_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            help="A fixed number of rows per chunk (turns adaptive sizing off).",
        )
        parser.add_argument(
            "--target-chunk-time",
            type=positive_float,
            help="Seconds a chunk should take; chunk sizes adapt toward it (default 0.5).",
        )
        parser.add_argument(
            "--pause-file", help="Throttle (wait) while this file exists, like pt-osc."
        )
        parser.add_argument(
            "--reverse", action="store_true", help="Run the backfill's reverse (its own run)."
        )
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A parameter the backfill declares (repeatable).",
        )
        parser.add_argument(
            "--exact-count",
            action="store_true",
            help="COUNT the rows to walk even on large tables (default: statistics there).",
        )
        parser.add_argument(
            "--sleep", type=non_negative_float, help="Seconds to wait between chunks."
        )
        parser.add_argument(
            "--max-chunks",
            type=positive_int,
            help="Stop (paused, resumable) after this many chunks.",
        )
        parser.add_argument(
            "--limit", type=positive_int, help="Stop (paused, resumable) after this many rows."
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Take over the run even if its owner's lease has not expired yet.",
        )
        parser.add_argument(
            "--progress",
            choices=["auto", "rich", "plain", "json", "none"],
            default="auto",
            help="auto: a live bar on a terminal, plain lines otherwise.",
        )
        parser.add_argument(
            "--progress-interval",
            type=non_negative_float,
            help="Seconds between plain progress lines (default: PROGRESS_INTERVAL setting).",
        )

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options.get("verbosity", 1)
        self.database = options["database"]
        if self.database not in connections:
            raise CommandError(f"Unknown database alias {self.database!r}.")
        is_tty = hasattr(self.stdout._out, "isatty") and self.stdout._out.isatty()
        self.console = Console(
            file=self.stdout._out,
            force_terminal=True if options.get("force_color") else None,
            no_color=bool(options.get("no_color")),
            highlight=False,
            width=None if is_tty or options.get("force_color") else 160,
        )
        handler = getattr(self, "handle_" + options["subcommand"].replace("-", "_"))
        try:
            handler(**options)
        except BackfillError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            # Connection refused, server gone away, table missing: no traceback for users.
            raise CommandError(
                f"Database {self.database!r} error: {type(exc).__name__}: {exc}".strip()
            ) from exc

    # -- list -----------------------------------------------------------------------------

    def handle_list(self, **options: Any) -> None:
        latest = self._latest_runs()
        table = Table(title="Registered backfills", title_justify="left")
        for column in ("name", "model", "description", "reverse", "latest run"):
            table.add_column(column)
        for backfill_cls in registry:
            run = latest.get(backfill_cls.name or "")
            _add_row(
                table,
                backfill_cls.name,
                _model_label(backfill_cls),
                backfill_cls.get_description(),
                "yes" if backfill_cls.is_reversible() else "-",
                f"#{run.pk} {run.state}" if run else "never run",
            )
        if not len(registry):
            self.stdout.write("No backfills registered. Define them in an app's backfills.py.")
            return
        self.console.print(table)

    # -- run / resume ---------------------------------------------------------------------

    def handle_run(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        self._run(backfill_cls, options, restart=options["restart"])

    def handle_resume(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        run = self._active_run(backfill_cls.name or "", options.get("reverse"))
        if run is None:
            raise CommandError(
                f"{backfill_cls.name} has no unfinished run to resume; use `backfill run`."
            )
        if run.requested_state == State.PAUSED and run.owner_token and self._owner_alive(run):
            withdrawn = (
                BackfillRun.objects.using(self.database)
                .filter(pk=run.pk, owner_token=run.owner_token, requested_state=State.PAUSED)
                .update(requested_state="")
            )
            if withdrawn:
                self.stdout.write(
                    f"Withdrew the pause request: run #{run.pk} keeps running on "
                    f"{run.owner_host} (pid {run.owner_pid})."
                )
                return
            # The owner acted on the request meanwhile (it paused): resume the run here.
        self._run(backfill_cls, options, restart=False)

    def _run(self, backfill_cls: type[Backfill], options: dict[str, Any], restart: bool) -> None:
        # Runner.run() and dry_run() check the required migrations themselves.
        parameters = split_assignments(options.get("param") or [])
        if options.get("dry_run"):
            self._dry_run(backfill_cls, options, parameters)
            return
        if restart and options["interactive"] and sys.stdin.isatty():
            answer = input(
                f"Start {backfill_cls.name} again from the first row? Rows already processed "
                "are processed again. [y/N] "
            )
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("Restart aborted.")
        runner = Runner(
            backfill_cls,
            using=self.database,
            options=RunOptions(
                batch_size=options.get("batch_size"),
                target_chunk_time=options.get("target_chunk_time"),
                pause_file=options.get("pause_file"),
                exact_count=options.get("exact_count", False),
                sleep=options.get("sleep"),
                max_chunks=options.get("max_chunks"),
                limit=options.get("limit"),
                restart=restart,
                force=options.get("force", False),
                reverse=options.get("reverse", False),
                parameters=parameters,
            ),
        )
        display = self._display(options)
        runner.listeners.append(display)
        with display if isinstance(display, RichProgress) else nullcontext(), self._signals(runner):
            try:
                result = runner.run()
            except Abort as exc:
                self.stderr.write(
                    "Aborted by a second signal: the open chunk was rolled back; the run is "
                    "paused at its last committed checkpoint."
                )
                raise SystemExit(SIGNAL_EXIT_BASE + exc.signum) from None
        if result.outcome is Outcome.ALREADY_COMPLETED:
            run = result.run
            finished = (
                timezone.localtime(run.finished_at).isoformat(timespec="seconds")
                if (run.finished_at)
                else "?"
            )
            self.stdout.write(
                f"{run.name} already completed (run #{run.pk}, finished {finished}). "
                "Pass --restart to run it again from the first row."
            )
        elif result.signum is not None:
            raise SystemExit(SIGNAL_EXIT_BASE + result.signum)
        elif result.critical:
            self.stderr.write(f"Paused on a critical health threshold: {result.reason}")
            raise SystemExit(CRITICAL_EXIT)

    def _dry_run(
        self, backfill_cls: type[Backfill], options: dict[str, Any], parameters: dict[str, str]
    ) -> None:
        report = dry_run(
            backfill_cls,
            using=self.database,
            chunks=options["dry_run_chunks"],
            batch_size=options.get("batch_size") or backfill_cls.batch_size or 1000,
            reverse=options.get("reverse", False),
            parameters=parameters,
        )
        write = self.stdout.write
        write(
            f"Dry run of {report.name}{' (reverse)' if options.get('reverse') else ''}: "
            f"{report.chunks} chunk(s), {report.rows_walked:,} rows walked, "
            f"{report.rows_processed:,} processed in {report.seconds:.3f}s "
            f"({format_rate(report.rate)}). Everything was rolled back; no run was recorded."
        )
        write(
            f"Projected: {report.rows_total:,} rows in about "
            f"{format_duration(report.projected_seconds)} of work (sleeps and throttling extra)."
        )
        if report.changes:
            table = Table(title="Sample of changed rows", title_justify="left")
            for column in ("pk", "field", "before", "after"):
                table.add_column(column, overflow="fold")
            for pk, diff in report.changes:
                for name, (before, after) in diff.items():
                    _add_row(table, str(pk), name, repr(before), repr(after))
            self.console.print(table)
        else:
            write("No sampled row changed.")
        write("Chunk query plan:")
        write(report.explain)

    def _display(self, options: dict[str, Any]) -> Listener:
        mode = options.get("progress", "auto")
        if self.verbosity == 0 and mode == "auto":
            mode = "none"
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        if mode == "rich":
            return RichProgress(self.console)
        if mode == "json":
            return JsonProgress(self.stdout.write)
        if mode == "plain":
            interval = options.get("progress_interval")
            if interval is None:
                interval = 0.0 if self.verbosity >= 2 else float(conf.get("PROGRESS_INTERVAL"))
            return PlainProgress(self.stdout.write, interval)
        return lambda event: None

    @contextmanager
    def _signals(self, runner: Runner) -> Iterator[None]:
        """First SIGINT/SIGTERM: finish the chunk and pause. Second: abort the chunk."""
        received: list[int] = []

        def handler(signum: int, frame: Any) -> None:
            received.append(signum)
            if len(received) == 1:
                name = signal.Signals(signum).name
                runner.request_stop(f"interrupted by {name}", signum)
                self.stderr.write(
                    f"\n{name} received: stopping after the current chunk commits "
                    "(send it again to abort the chunk now)."
                )
                return
            raise Abort(signum)

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sig in previous:
                signal.signal(sig, handler)
        except ValueError:
            # Not the main thread (e.g. call_command from a worker thread): no handlers.
            previous = {}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # -- status ---------------------------------------------------------------------------

    def handle_status(self, **options: Any) -> None:
        names = [registry.get(name).name or name for name in options["names"]]
        runs = BackfillRun.objects.using(self.database).order_by("name", "-id")
        if names:
            runs = runs.filter(name__in=names)
        if not options["all"]:
            latest = self._latest_runs()
            runs_list = [
                latest[label]
                for label in sorted(latest)
                if not names or latest[label].name in names
            ]
        else:
            runs_list = list(runs)
        if options["json"]:
            self.stdout.write(json.dumps([run.summary() for run in runs_list], indent=2))
            return
        if not runs_list:
            self.stdout.write("No runs recorded" + (f" for {', '.join(names)}." if names else "."))
            return
        table = Table(title="Backfill runs", title_justify="left")
        columns = [
            ("name", "left"),
            ("run", "right"),
            ("state", "left"),
            ("progress", "right"),
            ("rows", "right"),
            ("processed", "right"),
            ("rate", "right"),
            ("elapsed", "right"),
            ("ETA / finished", "left"),
        ]
        with_errors = any(run.error_class for run in runs_list)
        if with_errors:
            columns.append(("last error", "left"))
        for column, justify in columns:
            table.add_column(
                column,
                justify=justify,  # type: ignore[arg-type]
                no_wrap=column != "last error",
                overflow="ellipsis",
                max_width=36 if column == "last error" else None,
            )
        for run in runs_list:
            _add_row(table, *_status_cells(run)[: len(columns)])
        self.console.print(table)
        for run in runs_list:
            if run.status_reason and run.state in (State.PAUSED, State.CANCELLED):
                self.stdout.write(f"#{run.pk} {run.name}: {run.status_reason}")
            if run.parameters:
                described = ", ".join(f"{k}={v}" for k, v in sorted(run.parameters.items()))
                self.stdout.write(f"#{run.pk} {run.label}: parameters {described}")
            if run.throttle_reason and run.state == State.RUNNING:
                self.stdout.write(f"#{run.pk} {run.name}: throttled: {run.throttle_reason}")
            if run.requested_state:
                self.stdout.write(f"#{run.pk} {run.name}: {run.requested_state} requested")
            if run.state == State.RUNNING and run.owner_token:
                self.stdout.write(
                    f"#{run.pk} {run.name}: owned by {run.owner_host} pid {run.owner_pid}, "
                    f"heartbeat {describe_age(run.heartbeat_at)}"
                )
            if run.error_class and run.state == State.FAILED:
                self.stdout.write(f"#{run.pk} {run.name} failed: {run.last_error}")
            if run.error_backtrace and self.verbosity >= 2:
                self.stdout.write(f"#{run.pk} {run.name} traceback:\n{run.error_backtrace}")

    # -- quarantine -----------------------------------------------------------------------

    def handle_errors(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        rows = QuarantinedRow.objects.using(self.database).filter(name=backfill_cls.name)
        if not options["all"]:
            rows = rows.filter(resolved_at__isnull=True)
        if options["json"]:
            self.stdout.write(json.dumps([row.summary() for row in rows], indent=2))
            return
        if not rows:
            self.stdout.write(f"No quarantined rows for {backfill_cls.name}.")
            return
        table = Table(title=f"Quarantined rows of {backfill_cls.name}", title_justify="left")
        for column in ("pk", "run", "error", "attempts", "since", "resolved"):
            table.add_column(column, overflow="fold")
        for row in rows:
            first = (row.error_message.strip().splitlines() or [""])[0]
            _add_row(
                table,
                row.row_pk,
                f"#{row.run_id}",
                f"{row.error_class}: {first}",
                str(row.attempts),
                timezone.localtime(row.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                timezone.localtime(row.resolved_at).strftime("%Y-%m-%d %H:%M:%S")
                if row.resolved_at
                else "-",
            )
        self.console.print(table)

    def handle_retry_failed(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        resolved, failing = retry_quarantined(backfill_cls, self.database)
        if not resolved and not failing:
            self.stdout.write(f"No quarantined rows for {backfill_cls.name}.")
            return
        self.stdout.write(
            f"{backfill_cls.name}: {len(resolved)} quarantined row(s) processed, "
            f"{len(failing)} still failing."
        )
        for row in failing:
            self.stdout.write(f"  pk={row.row_pk}: {row.error_class}: {row.error_message}")
        if failing:
            raise CommandError(
                f"{len(failing)} row(s) still fail; see `backfill errors {backfill_cls.name}`."
            )

    # -- verify ---------------------------------------------------------------------------

    def handle_verify(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        check_requirements(backfill_cls, self.database)
        latest = (
            BackfillRun.objects.using(self.database)
            .filter(name=backfill_cls.name, reverse=False)
            .order_by("-id")
            .first()
        )
        given = split_assignments(options.get("param") or [])
        stored = latest.parameters if latest and not given else None
        values = (
            from_json(backfill_cls.parameters, stored)
            if stored is not None
            else parse_parameters(backfill_cls.name or "", backfill_cls.parameters, given)
        )
        backfill = backfill_cls(using=self.database, params=values)
        remaining = backfill.chunk_queryset().count()
        try:
            problem = backfill.post_check()
        except CheckFailed as exc:
            problem = str(exc)
        state = f"latest run #{latest.pk} {latest.state}" if latest else "never run"
        self.stdout.write(f"{backfill_cls.name} ({state}):")
        self.stdout.write(f"  rows still matching get_queryset(): {remaining:,}")
        self.stdout.write(f"  post_check: {problem or 'ok'}")
        if remaining or problem:
            raise CommandError(
                f"{backfill_cls.name} is not done: "
                + "; ".join(
                    part
                    for part in (
                        f"{remaining:,} row(s) still need work" if remaining else "",
                        f"post_check: {problem}" if problem else "",
                    )
                    if part
                )
                + "."
            )

    # -- set ------------------------------------------------------------------------------

    def handle_set(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        run = self._active_run(backfill_cls.name or "")
        if run is None:
            raise CommandError(f"{backfill_cls.name} has no unfinished run to change.")
        changes: dict[str, Any] = {}
        if options.get("batch_size"):
            changes["batch_size"] = options["batch_size"]
        if options.get("adaptive"):
            changes["batch_size"] = None
        if options.get("target_chunk_time") is not None:
            changes["target_chunk_time"] = options["target_chunk_time"]
            changes.setdefault("batch_size", None)
        if options.get("sleep") is not None:
            changes["sleep"] = options["sleep"]
        if not changes:
            raise CommandError(
                "Nothing to change: give --batch-size, --adaptive, --target-chunk-time or --sleep."
            )
        updated = (
            BackfillRun.objects.using(self.database)
            .filter(pk=run.pk, active_key=run.active_key)
            .update(
                settings_version=F("settings_version") + 1, updated_at=timezone.now(), **changes
            )
        )
        if not updated:
            raise CommandError(f"Run #{run.pk} of {run.label} finished before it could change.")
        described = ", ".join(
            f"{key}={'adaptive' if value is None else value}" for key, value in changes.items()
        )
        where = (
            "the running process applies it at its next chunk boundary"
            if run.owner_token and self._owner_alive(run)
            else "used when the run resumes"
        )
        self.stdout.write(f"Run #{run.pk} of {run.name}: {described} ({where}).")

    # -- pause / cancel -------------------------------------------------------------------

    def handle_pause(self, **options: Any) -> None:
        self._request(options["name"], State.PAUSED, options)

    def handle_cancel(self, **options: Any) -> None:
        self._request(options["name"], State.CANCELLED, options)

    def _request(self, name: str, state: str, options: dict[str, Any]) -> None:
        backfill_cls = registry.get(name)
        run = self._active_run(backfill_cls.name or "")
        if run is None:
            raise CommandError(f"{backfill_cls.name} has no unfinished run to {_verb(state)}.")
        if state == State.CANCELLED and options["interactive"] and sys.stdin.isatty():
            answer = input(f"Cancel run #{run.pk} of {run.name} for good? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                raise CommandError("Cancel aborted.")
        runs = BackfillRun.objects.using(self.database)
        if run.owner_token and self._owner_alive(run):
            asked = runs.filter(
                pk=run.pk, owner_token=run.owner_token, active_key=run.active_key
            ).update(requested_state=state)
            if not asked:
                # It finished or stopped meanwhile: nobody would act on the request.
                raise CommandError(f"Run #{run.pk} of {run.label} finished or stopped meanwhile.")
            self.stdout.write(
                f"Asked run #{run.pk} of {run.name} (host {run.owner_host}, pid "
                f"{run.owner_pid}) to {_verb(state)} at its next chunk boundary."
            )
            return
        if state == State.PAUSED and run.state == State.PAUSED:
            self.stdout.write(f"Run #{run.pk} of {run.name} is already paused.")
            return
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": state,
            "status_reason": f"{_verb(state)}d by `backfill {_verb(state)}` while not running",
            "requested_state": "",
            "updated_at": now,
            "owner_token": None,
            "owner_pid": None,
            "owner_host": "",
        }
        if state == State.CANCELLED:
            fields.update(active_key=None, finished_at=now)
        # Conditional on the lease we saw being gone, so a process that claimed the run
        # meanwhile is not overwritten.
        stale = runs.filter(pk=run.pk, owner_token=run.owner_token).update(**fields)
        if not stale:
            raise CommandError(f"Run #{run.pk} changed while we looked; try again.")
        self.stdout.write(f"Run #{run.pk} of {run.name} is now {state}.")

    # -- helpers --------------------------------------------------------------------------

    def _latest_runs(self) -> dict[str, BackfillRun]:
        """The newest run of each backfill (and of its reverse, under "NAME (reverse)")."""
        latest: dict[str, BackfillRun] = {}
        for run in BackfillRun.objects.using(self.database).order_by("-id"):
            latest.setdefault(run.label, run)
        return latest

    def _active_run(self, name: str, reverse: bool | None = None) -> BackfillRun | None:
        """The unfinished run of *name*: of the given direction, or of either (newest first)."""
        keys = (
            [name, f"{name}:reverse"]
            if reverse is None
            else [f"{name}:reverse" if reverse else name]
        )
        return (
            BackfillRun.objects.using(self.database)
            .filter(active_key__in=keys)
            .order_by("-id")
            .first()
        )

    def _owner_alive(self, run: BackfillRun) -> bool:
        return owner_alive(run)


def _add_row(table: Table, *cells: str) -> None:
    """Add cells as plain text: data ("[News] ...", "[Errno 111]") is not rich markup."""
    table.add_row(*(Text(cell) for cell in cells))


def _verb(state: str) -> str:
    return "pause" if state == State.PAUSED else "cancel"


def _model_label(backfill_cls: type[Backfill]) -> str:
    try:
        return backfill_cls.get_model()._meta.label
    except BackfillError as exc:
        return f"(error: {exc})"


def _status_cells(run: BackfillRun) -> list[str]:
    percent = "-" if run.percent is None else f"{run.percent:.1f}%"
    total = (
        "?"
        if run.rows_total is None
        else f"{'' if run.rows_total_exact else '~'}{run.rows_total:,}"
    )
    elapsed = run.elapsed
    if run.finished_at:
        when = timezone.localtime(run.finished_at).strftime("%Y-%m-%d %H:%M:%S")
    elif run.state == State.RUNNING:
        when = f"ETA {format_duration(run.eta_seconds)}"
    else:
        when = "-"
    return [
        run.label,
        f"#{run.pk}",
        run.state,
        percent,
        f"{run.rows_scanned:,}/{total}",
        f"{run.rows_processed:,}",
        format_rate(run.rate),
        format_duration(elapsed.total_seconds() if elapsed else None),
        when,
        run.last_error[:80],
    ]
