"""``backfill worker`` and ``backfill run --workers N``: parallel runs.

``worker`` drains partitions of running parallel runs until signalled (any number of them, on
any hosts). ``run --workers N`` opens the run, splits it into partitions and starts N worker
processes on this host (or, with ``--enqueue``, hands N workers to the task backend), then
shows the whole run's progress until it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.core.management.base import CommandError

from .. import conf
from ..display import format as fmt
from ..display.progress import RichProgress
from ..engine.ledger import Ledger, Partitions
from ..engine.parallel import ParallelRun, check_workers, start_parallel
from ..engine.runner import RunOptions
from ..engine.workers import Worker, skipped
from ..events import ChunkCommitted, RunCancelled, RunCompleted, RunFailed, RunPaused, RunStarted
from ..exceptions import Abort, BackfillFailed
from ..models import BackfillRun
from ..snapshot import RunSnapshot
from .base import Subcommand, abort, positive_int, seconds, stop_signals

if TYPE_CHECKING:
    from ..base import Backfill
    from ..events import Listener

State = BackfillRun.State

#: How often the parent of local workers reads the run's figures for its display.
DISPLAY_EVERY = 0.25
#: A worker that keeps dying (a bug, not a kill) is replaced at most this many times each.
MAX_REPLACEMENTS_PER_WORKER = 10


def run_reference(text: str) -> str:
    """``--run``: a run id, or ``ALIAS:ID`` for the run of that id on one database."""
    alias, _, number = text.rpartition(":")
    positive_int(number)
    return f"{alias}:{int(number)}" if alias else str(int(number))


class WorkerCommand(Subcommand):
    name = "worker"
    takes_shards = True
    help = (
        "Drain partitions of running parallel runs (started with `run --workers N`) until "
        "signalled; run any number of these on any hosts."
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--run",
            dest="run_ids",
            type=run_reference,
            action="append",
            help="Only this run: an id (on every --database) or ALIAS:ID; repeat for several. "
            "Default: every running parallel run.",
        )
        parser.add_argument(
            "--max-seconds",
            type=seconds(),
            help="Hand the partition back and exit after about this long.",
        )
        parser.add_argument(
            "--exit-when-idle",
            action="store_true",
            help="Exit once no partition is left to walk or to wait for (default: keep "
            "polling for new runs).",
        )
        parser.add_argument(
            "--idle-poll",
            type=seconds(),
            default=1.0,
            help="Seconds between looks for work while idle (default 1).",
        )

    def run_ids(self, given: list[str] | None) -> dict[str, list[int]] | None:
        """The runs to drain on each database, from --run ID / ALIAS:ID."""
        if not given:
            return None
        ids: dict[str, list[int]] = {alias: [] for alias in self.databases}
        for reference in given:
            alias, _, number = reference.rpartition(":")
            if alias and alias not in ids:
                raise CommandError(f"--run {reference}: {alias!r} is not a --database given.")
            for target in [alias] if alias else self.databases:
                ids[target].append(int(number))
        return ids

    def handle(self, **options: Any) -> None:
        worker = Worker(
            databases=self.databases,
            run_ids=self.run_ids(options.get("run_ids")),
            max_seconds=options.get("max_seconds"),
            exit_when_idle=options["exit_when_idle"],
            idle_poll=options["idle_poll"],
            report=self.write if self.verbosity >= 1 else None,
        )

        def first(signum: int) -> None:
            name = fmt.signal_name(signum)
            worker.request_stop(f"interrupted by {name}", signum)
            self.stderr.write(
                f"{name} received: handing the partition back after the current chunk "
                "commits (send it again to abort the chunk now)."
            )

        try:
            with stop_signals(first, abort):
                result = worker.run()
        except Abort as exc:
            self.stderr.write(
                f"Aborted by a second {fmt.signal_name(exc.signum)}: the open chunk was rolled "
                "back and the partition handed back."
            )
            raise SystemExit(128 + exc.signum) from None
        if self.verbosity >= 1:
            self.write(
                f"Worker done ({result.reason}): {fmt.count(result.chunks, 'chunk')}, "
                f"{result.rows:,} rows, {result.partitions_done} partitions finished, "
                f"{result.partitions_released} handed back."
            )


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="Split the run into partitions walked by this many worker processes (on this "
        "host, or with --enqueue by the task backend). More than 1 needs PostgreSQL or "
        "MySQL/MariaDB.",
    )
    parser.add_argument(
        "--max-workers",
        type=positive_int,
        help="At most this many partitions leased at once, whoever the workers are "
        "(default: no cap).",
    )
    parser.add_argument(
        "--enqueue",
        action="store_true",
        help="Hand the workers to the task backend (BACKFILLS['TASK_BACKEND']: 'django' for "
        "Django's task framework, 'celery') instead of starting them here.",
    )


def worker_command(targets: Sequence[tuple[str, BackfillRun]]) -> list[str]:
    """The command line of one local worker process draining *targets* (alias, run)."""
    command = [sys.executable, "-m", "django", "backfill", "worker"]
    for using, run in targets:
        command += ["--database", using, "--run", f"{using}:{run.pk}"]
    return [*command, "--exit-when-idle", "--idle-poll", "0.2", "-v", "0"]


def worker_env() -> dict[str, str]:
    """This process's environment, with the settings module and import path it runs with, so
    a worker started from ``manage.py`` (or a test) loads the same project."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = django_settings.SETTINGS_MODULE
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Target:
    """One run of a ``run --workers`` invocation (one per ``--database``) and its display."""

    def __init__(self, opened: ParallelRun, using: str, listener: Listener) -> None:
        self.run = opened.run
        self.how = opened.how
        self.using = using
        self.listener = listener
        self.ledger = Ledger(using, float(conf.get("LEASE_SECONDS")))
        self.partitions = Partitions(self.ledger)
        self.shown = 0

    def snapshot(self) -> RunSnapshot:
        """The run as its row says, with its partitions' sums where the workers have not
        rolled them up yet (read only: the workers write the run row, not the display)."""
        self.ledger.read(self.run)
        sums, _ = self.partitions.sums(self.run)
        run = RunSnapshot.of(self.run)
        return dataclasses.replace(
            run, **{name: max(value, getattr(run, name)) for name, value in sums.items()}
        )


class ParallelRunner:
    """What ``run --workers N`` does once its runs are open: start N local worker processes
    (each draining every run of the invocation), show progress, start another worker when
    one dies while the runs go on, and pause the runs on SIGINT/SIGTERM/SIGHUP."""

    def __init__(self, verb: Subcommand, targets: Sequence[_Target], workers: int) -> None:
        self.verb = verb
        self.targets = list(targets)
        self.workers = workers
        self.children: list[subprocess.Popen[bytes]] = []
        self.signum: int | None = None
        self.paused = False
        #: Workers started in place of one that died.
        self.replaced = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            worker_command([(t.using, t.run) for t in self.targets]),
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=None if self.verb.verbosity >= 2 else subprocess.DEVNULL,
            # Not in the terminal's process group: Ctrl-C reaches the parent only, which
            # pauses the run and sends each worker one SIGTERM (a second would abort chunks).
            start_new_session=True,
        )
        self.children.append(child)
        return child

    # Signal handlers only note the signal and signal the children; the loop writes the
    # pause (a query from a handler could land in the middle of the loop's own).

    def first_signal(self, signum: int) -> None:
        self.signum = signum
        self.verb.stderr.write(
            f"\n{fmt.signal_name(signum)} received: pausing the run; the workers hand their "
            "partitions back after their current chunk (send it again to abort their chunks "
            "now)."
        )
        self._signal_children(signal.SIGTERM)

    def second_signal(self, signum: int) -> None:
        self._signal_children(signal.SIGKILL)

    def _signal_children(self, sig: int) -> None:
        for child in self.children:
            if child.poll() is None:
                with suppress(ProcessLookupError):
                    child.send_signal(sig)

    def _pause(self) -> None:
        assert self.signum is not None
        reason = f"interrupted by {fmt.signal_name(self.signum)}"
        for target in self.targets:
            run = target.ledger.read(target.run)
            if run.state == State.RUNNING:
                target.ledger.stop_unowned(run, State.PAUSED, reason)
        self.paused = True

    def __call__(self) -> None:
        for target in self.targets:
            run = target.snapshot()
            target.shown = run.rows_scanned
            target.listener(RunStarted(run=run, resumed=target.how != "started"))
        with stop_signals(self.first_signal, self.second_signal):
            for _ in range(self.workers):
                self.spawn()
            while True:
                time.sleep(DISPLAY_EVERY)
                try:
                    if self.signum is not None and not self.paused:
                        self._pause()
                    runs = [self._show(target) for target in self.targets]
                except Exception as exc:
                    # A lock wait or a dropped connection: look again at the next tick (the
                    # workers go on meanwhile). Anything else is a real error.
                    if not skipped(exc, [t.using for t in self.targets], "watching the run"):
                        raise
                    continue
                running = [child for child in self.children if child.poll() is None]
                if any(run.state == State.RUNNING for run in runs) and self.signum is None:
                    self._replace_dead(running)
                if not running:
                    break
            if self.signum is None and any(run.state == State.RUNNING for run in runs):
                # Every worker exited with a run still open: only completion can be left.
                Worker(
                    databases=[t.using for t in self.targets],
                    run_ids={t.using: [t.run.pk] for t in self.targets},
                    exit_when_idle=True,
                ).run()
                runs = [target.snapshot() for target in self.targets]
        failed = [self.finish(target, run) for target, run in zip(self.targets, runs, strict=True)]
        if any(failed):
            raise CommandError(" ".join(message for message in failed if message))
        if self.signum is not None:
            raise SystemExit(128 + self.signum)
        if any(
            run.state == State.PAUSED and run.status_reason.startswith("critical") for run in runs
        ):
            from .run import CRITICAL_EXIT

            self.verb.stderr.write("Paused on a critical health threshold.")
            raise SystemExit(CRITICAL_EXIT)

    def _show(self, target: _Target) -> RunSnapshot:
        run = target.snapshot()
        if run.rows_scanned != target.shown:
            target.listener(
                ChunkCommitted(
                    run=run,
                    window_size=run.rows_scanned - target.shown,
                    processed=0,
                    seconds=DISPLAY_EVERY,
                )
            )
            target.shown = run.rows_scanned
        return run

    def _replace_dead(self, running: list[subprocess.Popen[bytes]]) -> None:
        """A worker killed (or crashed) while the runs go on: start another. Its partition is
        taken over at once (its pid is gone on this host)."""
        for child in self.children:
            if child.returncode not in (None, 0) and child not in running:
                self.children.remove(child)
                if self.replaced >= MAX_REPLACEMENTS_PER_WORKER * self.workers:
                    self.verb.stderr.write(
                        f"worker pid {child.pid} ended with status {child.returncode}; "
                        f"{self.replaced} workers replaced already, not starting another "
                        "(see the workers' errors above)"
                    )
                    return
                self.verb.stderr.write(
                    f"worker pid {child.pid} ended with status {child.returncode}; starting another"
                )
                self.replaced += 1
                running.append(self.spawn())
                return

    def finish(self, target: _Target, run: RunSnapshot) -> str:
        """Show how *run* ended; the error message if it failed."""
        if run.state == State.COMPLETED:
            target.listener(RunCompleted(run=run))
        elif run.state == State.PAUSED:
            target.listener(RunPaused(run=run, reason=run.status_reason or "paused"))
        elif run.state == State.CANCELLED:
            target.listener(RunCancelled(run=run, reason=run.status_reason or "cancelled"))
        elif run.state == State.FAILED:
            target.listener(RunFailed(run=run, error=BackfillFailed(run.last_error or "failed")))
            return (
                f"Backfill {run.label} failed on {target.using!r}: {run.last_error}. The "
                "committed chunks are kept; fix the cause and run it again to resume."
            )
        return ""


def run_parallel(
    verb: Subcommand,
    backfill_cls: type[Backfill],
    options: dict[str, Any],
    run_options: RunOptions,
    display: Callable[[str], Listener],
) -> None:
    """``run --workers N``: open the run on each --database, then start local workers or
    enqueue tasks. *display* makes the listener of the run on an alias."""
    workers = options["workers"]
    for using in verb.databases:  # before any run is opened: all aliases or none
        check_workers(workers, using)
    targets = []
    for using in verb.databases:
        opened = start_parallel(
            backfill_cls,
            workers=workers,
            max_workers=options.get("max_workers"),
            using=using,
            options=run_options,
        )
        run = opened.run
        where = f" on {using!r}" if len(verb.databases) > 1 else ""
        if opened.how == "already completed":
            verb.write(
                f"{run.label} already completed{where} (run #{run.pk}, finished "
                f"{fmt.iso_timestamp(run.finished_at)}). Pass --restart to run it again from "
                "the first row."
            )
            continue
        if options.get("enqueue"):
            from ..tasks import enqueue_workers

            backend = enqueue_workers(run, workers, using=using)
            verb.write(
                f"{opened.how.capitalize()} run #{run.pk} of {run.label}{where}: "
                f"{fmt.count(run.partitions.count(), 'partition')}; enqueued "
                f"{fmt.count(workers, 'worker task')} on {backend}. Watch it with "
                f"`backfill status {run.name} -v 2`."
            )
            continue
        targets.append(_Target(opened, using, display(using)))
    if not targets:
        return
    lives = [t.listener for t in targets if isinstance(t.listener, RichProgress)]
    with lives[0] if len(lives) == 1 else nullcontext():
        ParallelRunner(verb, targets, workers)()
