"""``backfill verify``: count the rows still needing work and run the backfill's post_check."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError

from .. import control
from ..engine.runner import check_requirements
from ..exceptions import CheckFailed
from ..parameters import from_json, parse_parameters
from ..registry import registry
from .base import Subcommand, add_param_argument, given_parameters


class VerifyCommand(Subcommand):
    name = "verify"
    help = "Count rows still needing work and run the backfill's post_check."

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="Backfill name.")
        add_param_argument(parser)

    def handle(self, **options: Any) -> None:
        backfill_cls = registry.get(options["name"])
        given = given_parameters(backfill_cls, options["param"])
        check_requirements(backfill_cls, self.database)
        state = control.backfill_state(backfill_cls, using=self.database)
        # The parameters the data was written with: the latest forward run's.
        forward = control.latest_run(backfill_cls, using=self.database)
        latest = state.run
        stored = forward.parameters if forward is not None and not given else None
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
        where = state.state if latest is None else f"latest run #{latest.pk} {state.state}"
        self.write(f"{backfill_cls.name} ({where}):")
        self.write(f"  rows still matching get_queryset(): {remaining:,}")
        self.write(f"  post_check: {problem or 'ok'}")
        if remaining or problem:
            parts = [
                f"{remaining:,} row(s) still need work" if remaining else "",
                f"post_check: {problem}" if problem else "",
            ]
            raise CommandError(
                f"{backfill_cls.name} is not done: {'; '.join(p for p in parts if p)}."
            )
