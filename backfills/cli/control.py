"""``backfill pause``, ``cancel`` and ``set``: requests to a run, through ``backfills.control``."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError

from .. import control
from ..registry import registry
from .base import Subcommand, add_profile_arguments, asks, confirm, positive_int, seconds, who


class PauseCommand(Subcommand):
    name = "pause"
    help = "Ask the running process to stop at its next chunk boundary (resumable)."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")

    def handle(self, **options: Any) -> None:
        result = control.pause(options["name"], using=self.database, by=who(), via="command")
        self.write(result.message)


class CancelCommand(Subcommand):
    name = "cancel"
    help = "Stop the run for good; a new run needs `run --restart`."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        if asks(options["interactive"]):
            run = control.active_run(backfill_cls, using=self.database)
            # With none, control.cancel() below says so (and how to start again).
            if run is not None and not confirm(
                f"Cancel run #{run.pk} of {run.label} for good?", True
            ):
                raise CommandError("Cancel aborted.")
        result = control.cancel(backfill_cls, using=self.database, by=who(), via="command")
        self.write(result.message)


class SetCommand(Subcommand):
    name = "set"
    help = "Change a run's chunk size, target time, sleep, profile or duty, even while it runs."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")
        size = parser.add_mutually_exclusive_group()
        size.add_argument("--batch-size", type=positive_int, help="A fixed chunk size.")
        size.add_argument(
            "--adaptive", action="store_true", help="Size chunks toward the target time again."
        )
        parser.add_argument(
            "--target-chunk-time",
            type=seconds(),
            help="Seconds a chunk should take; chunk sizes adapt toward it (implies --adaptive).",
        )
        parser.add_argument(
            "--sleep", type=seconds(allow_zero=True), help="Seconds to wait between chunks."
        )
        add_profile_arguments(parser)

    def handle(self, **options: Any) -> None:
        changes: dict[str, Any] = {}
        if options.get("profile"):
            changes["profile"] = options["profile"]
        if options.get("max_duty") is not None:
            changes["max_duty"] = options["max_duty"]
        if options.get("batch_size"):
            changes["batch_size"] = options["batch_size"]
        if options.get("adaptive"):
            changes["batch_size"] = None
        if options.get("target_chunk_time") is not None:
            changes["target_chunk_time"] = options["target_chunk_time"]
        if options.get("sleep") is not None:
            changes["sleep"] = options["sleep"]
        if not changes:
            raise CommandError(
                "Nothing to change: give --batch-size, --adaptive, --target-chunk-time, --sleep, "
                "--profile or --max-duty."
            )
        result = control.change_settings(
            options["name"], using=self.database, by=who(), via="command", **changes
        )
        self.write(result.message)
