"""``backfill status``: runs with progress, rate and errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import control
from ..display.tables import partitions_table, status_notes, status_table
from ..registry import registry
from .base import Subcommand


class StatusCommand(Subcommand):
    name = "status"
    help = "Runs with progress, rate and errors; -v 2 lists a parallel run's partitions."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="Only these backfills.")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Machine-readable output (with each partition of a parallel run).",
        )
        parser.add_argument(
            "--all", action="store_true", help="Every run, not only the latest per backfill."
        )

    def handle(self, **options: Any) -> None:
        names = [registry.get(name).name or name for name in options["names"]]
        runs = control.status(names, using=self.database, all_runs=options["all"])
        if options["json"]:
            summaries = []
            for run in runs:
                summary = run.summary()
                if run.parallel:
                    summary["partitions"] = [
                        p.summary() for p in control.partitions(run, using=self.database)
                    ]
                summaries.append(summary)
            self.write(json.dumps(summaries, indent=2))
            return
        if not runs:
            self.write("No runs recorded" + (f" for {', '.join(names)}." if names else "."))
            return
        self.console.print(status_table(self.console, runs))
        for run in runs:
            parts = control.partitions(run, using=self.database) if run.parallel else []
            for note in status_notes(run, self.verbosity, parts):
                self.write(note)
            if parts and self.verbosity >= 2:
                self.console.print(partitions_table(self.console, run, parts))
