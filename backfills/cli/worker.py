"""``backfill worker`` and ``backfill run --workers N``: parallel runs.

``worker`` drains partitions of running parallel runs until signalled (any number of them, on
any hosts). ``run --workers N`` opens the run, splits it into partitions and starts N worker
processes on this host (or, with ``--enqueue``, hands N workers to the task backend), then
shows the whole run's progress until it ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.core.management.base import CommandError

from .. import conf
from ..display import format as fmt
from ..display.progress import RichProgress
from ..engine.ledger import Ledger, Partitions
from ..engine.parallel import ParallelRun, start_parallel
from ..engine.runner import RunOptions
from ..engine.workers import Worker
from ..events import ChunkCommitted, RunCancelled, RunCompleted, RunFailed, RunPaused, RunStarted
from ..exceptions import Abort, BackfillFailed
from ..models import BackfillRun
from ..snapshot import RunSnapshot
from .base import Subcommand, positive_int, seconds

if TYPE_CHECKING:
    from ..base import Backfill
    from ..events import Listener

State = BackfillRun.State

#: How often the parent of local workers reads the run's figures for its display.
DISPLAY_EVERY = 0.25


def _stop_signals() -> tuple[signal.Signals, ...]:
    from .run import STOP_SIGNALS

    return STOP_SIGNALS


@contextmanager
def handled(first: Any, second: Any) -> Iterator[None]:
    """Call *first(signum)* on the first SIGINT/SIGTERM/SIGHUP and *second(signum)* on any
    later one, restoring the previous handlers afterwards."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        (first if len(received) == 1 else second)(signum)

    previous = {sig: signal.getsignal(sig) for sig in _stop_signals()}
    try:
        for sig in previous:
            signal.signal(sig, handler)
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class WorkerCommand(Subcommand):
    name = "worker"
    help = (
        "Drain partitions of running parallel runs (started with `run --workers N`) until "
        "signalled; run any number of these on any hosts."
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--run",
            dest="run_ids",
            type=positive_int,
            action="append",
            help="Only this run (by id); repeat for several. Default: every parallel run.",
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

    def handle(self, **options: Any) -> None:
        worker = Worker(
            databases=[self.database],
            run_ids=options.get("run_ids"),
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

        def second(signum: int) -> None:
            raise Abort(signum)

        try:
            with handled(first, second):
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


def worker_command(run: BackfillRun, using: str) -> list[str]:
    """The command line of one local worker process for *run*."""
    return [
        sys.executable,
        "-m",
        "django",
        "backfill",
        "worker",
        "--run",
        str(run.pk),
        "--database",
        using,
        "--exit-when-idle",
        "--idle-poll",
        "0.2",
        "-v",
        "0",
    ]


def worker_env() -> dict[str, str]:
    """This process's environment, with the settings module and import path it runs with, so
    a worker started from ``manage.py`` (or a test) loads the same project."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = django_settings.SETTINGS_MODULE
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ParallelRunner:
    """What ``run --workers N`` does after the run is open: start and watch the workers."""

    def __init__(
        self, verb: Subcommand, opened: ParallelRun, workers: int, listener: Listener
    ) -> None:
        self.verb = verb
        self.using = verb.database
        self.run = opened.run
        self.how = opened.how
        self.workers = workers
        self.listener = listener
        self.ledger = Ledger(self.using, float(conf.get("LEASE_SECONDS")))
        self.partitions = Partitions(self.ledger)
        self.children: list[subprocess.Popen[bytes]] = []
        self.signum: int | None = None
        self.aborted = False

    def spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            worker_command(self.run, self.using),
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=None if self.verb.verbosity >= 2 else subprocess.DEVNULL,
        )
        self.children.append(child)
        return child

    def snapshot(self) -> RunSnapshot:
        self.partitions.roll_up(self.run)
        self.ledger.read(self.run)
        return RunSnapshot.of(self.run)

    def first_signal(self, signum: int) -> None:
        self.signum = signum
        name = fmt.signal_name(signum)
        self.verb.stderr.write(
            f"\n{name} received: pausing the run; the workers hand their partitions back after "
            "their current chunk (send it again to abort their chunks now)."
        )
        self.ledger.stop_unowned(self.ledger.read(self.run), State.PAUSED, f"interrupted by {name}")
        self._signal_children(signal.SIGTERM)

    def second_signal(self, signum: int) -> None:
        self.aborted = True
        self._signal_children(signal.SIGKILL)

    def _signal_children(self, sig: int) -> None:
        for child in self.children:
            if child.poll() is None:
                with suppress(ProcessLookupError):
                    child.send_signal(sig)

    def __call__(self) -> None:
        run = self.snapshot()
        self.listener(RunStarted(run=run, resumed=self.how != "started"))
        with handled(self.first_signal, self.second_signal):
            for _ in range(self.workers):
                self.spawn()
            shown = run.rows_scanned
            while True:
                time.sleep(DISPLAY_EVERY)
                run = self.snapshot()
                if run.rows_scanned != shown:
                    self.listener(
                        ChunkCommitted(
                            run=run,
                            window_size=run.rows_scanned - shown,
                            processed=0,
                            seconds=DISPLAY_EVERY,
                        )
                    )
                    shown = run.rows_scanned
                running = [child for child in self.children if child.poll() is None]
                if run.state == State.RUNNING and self.signum is None:
                    # A worker killed (or crashed) while the run goes on: start another. Its
                    # partition is taken over at once (its pid is gone on this host).
                    for child in self.children:
                        if child.returncode not in (None, 0) and child not in running:
                            self.verb.stderr.write(
                                f"worker pid {child.pid} ended with status {child.returncode}; "
                                "starting another"
                            )
                            self.children.remove(child)
                            running.append(self.spawn())
                            break
                if not running:
                    break
            if run.state == State.RUNNING and self.signum is None:
                # Every worker exited with the run still open: only completion can be left.
                Worker(databases=[self.using], run_ids=[self.run.pk], exit_when_idle=True).run()
                run = self.snapshot()
        self.finish(run)

    def finish(self, run: RunSnapshot) -> None:
        if run.state == State.COMPLETED:
            self.listener(RunCompleted(run=run))
        elif run.state == State.PAUSED:
            self.listener(RunPaused(run=run, reason=run.status_reason or "paused"))
        elif run.state == State.CANCELLED:
            self.listener(RunCancelled(run=run, reason=run.status_reason or "cancelled"))
        elif run.state == State.FAILED:
            error = BackfillFailed(run.last_error or "failed")
            self.listener(RunFailed(run=run, error=error))
            raise CommandError(
                f"Backfill {run.label} failed: {run.last_error}. The committed chunks are "
                "kept; fix the cause and run it again to resume."
            )
        if self.aborted and self.signum is not None:
            raise SystemExit(128 + self.signum)
        if self.signum is not None:
            raise SystemExit(128 + self.signum)


def run_parallel(
    verb: Subcommand,
    backfill_cls: type[Backfill],
    options: dict[str, Any],
    run_options: RunOptions,
    listener: Listener,
) -> None:
    """``run --workers N``: open the run, then start local workers or enqueue tasks."""
    workers = options["workers"]
    opened = start_parallel(
        backfill_cls,
        workers=workers,
        max_workers=options.get("max_workers"),
        using=verb.database,
        options=run_options,
    )
    run = opened.run
    if opened.how == "already completed":
        verb.write(
            f"{run.label} already completed (run #{run.pk}, finished "
            f"{fmt.iso_timestamp(run.finished_at)}). Pass --restart to run it again from "
            "the first row."
        )
        return
    if options.get("enqueue"):
        from ..tasks import enqueue_workers

        backend = enqueue_workers(run, workers, using=verb.database)
        verb.write(
            f"{opened.how.capitalize()} run #{run.pk} of {run.label}: "
            f"{fmt.count(run.partitions.count(), 'partition')}; enqueued "
            f"{fmt.count(workers, 'worker task')} on {backend}. Watch it with "
            f"`backfill status {run.name} -v`."
        )
        return
    live = listener if isinstance(listener, RichProgress) else nullcontext()
    with live:
        ParallelRunner(verb, opened, workers, listener)()
