"""``backfill list``: every registered backfill and where its data stands."""

from __future__ import annotations

from typing import Any

from .. import control
from ..base import Backfill
from ..display.tables import ListRow, list_table
from ..exceptions import BackfillError
from ..registry import registry
from .base import Subcommand


class ListCommand(Subcommand):
    name = "list"
    help = "Registered backfills and their state (the latest run in either direction)."

    def handle(self, **options: Any) -> None:
        if not len(registry):
            self.write("No backfills registered. Define them in an app's backfills.py.")
            return
        rows = [
            ListRow(
                name=backfill_cls.name or "",
                model=_model_label(backfill_cls),
                description=backfill_cls.get_description(),
                reversible=backfill_cls.is_reversible(),
                state=control.backfill_state(backfill_cls, using=self.database),
            )
            for backfill_cls in registry
        ]
        self.console.print(list_table(self.console, rows))


def _model_label(backfill_cls: type[Backfill]) -> str:
    from ..inputs import CSVBackfill, InputBackfill

    if issubclass(backfill_cls, InputBackfill) and backfill_cls.model is None:
        return "(CSV file)" if issubclass(backfill_cls, CSVBackfill) else "(input)"
    try:
        return backfill_cls.get_model()._meta.label
    except BackfillError as exc:
        return f"(error: {exc})"
