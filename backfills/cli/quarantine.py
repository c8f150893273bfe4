"""``backfill errors`` and ``backfill retry-failed``: the rows a quarantining backfill set aside."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import CommandError

from .. import control
from ..display import format as fmt
from ..display.tables import errors_table
from ..models import QuarantinedRow
from ..registry import registry
from .base import Subcommand, who


class ErrorsCommand(Subcommand):
    name = "errors"
    help = "Rows a quarantining backfill set aside, with their errors."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument(
            "--all", action="store_true", help="Include rows already resolved by retry-failed."
        )

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        rows = QuarantinedRow.objects.using(self.database).filter(name=backfill_cls.name)
        if not options["all"]:
            rows = rows.filter(resolved_at__isnull=True)
        found = list(rows)
        if options["json"]:
            self.write(json.dumps([row.summary() for row in found], indent=2))
            return
        if not found:
            self.write(f"No quarantined rows for {backfill_cls.name}.")
            return
        self.console.print(errors_table(self.console, backfill_cls.name or "", found))


class RetryFailedCommand(Subcommand):
    name = "retry-failed"
    help = "Process the quarantined rows again (after fixing the cause)."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        resolved, failing = control.retry_quarantined(
            backfill_cls, using=self.database, by=who(), via="command"
        )
        if not resolved and not failing:
            self.write(f"No quarantined rows for {backfill_cls.name}.")
            return
        self.write(
            f"{backfill_cls.name}: {fmt.count(len(resolved), 'quarantined row')} processed, "
            f"{len(failing):,} still failing."
        )
        for row in failing:
            self.write(f"  pk={row.row_pk}: {row.error_class}: {row.error_message}")
        if failing:
            raise CommandError(
                f"{fmt.count(len(failing), 'row')} still failing; see "
                f"`backfill errors {backfill_cls.name}`."
            )
