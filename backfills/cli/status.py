"""``backfill status``: runs with progress, rate and errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import control
from ..display.tables import status_notes, status_table
from ..registry import registry
from .base import Subcommand


class StatusCommand(Subcommand):
    name = "status"
    help = "Runs with progress, rate and errors."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="Only these backfills.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument(
            "--all", action="store_true", help="Every run, not only the latest per backfill."
        )

    def handle(self, **options: Any) -> None:
        names = [registry.get(name).name or name for name in options["names"]]
        runs = control.status(names, using=self.database, all_runs=options["all"])
        if options["json"]:
            self.write(json.dumps([run.summary() for run in runs], indent=2))
            return
        if not runs:
            self.write("No runs recorded" + (f" for {', '.join(names)}." if names else "."))
            return
        self.console.print(status_table(self.console, runs))
        for run in runs:
            for note in status_notes(run, self.verbosity):
                self.write(note)
