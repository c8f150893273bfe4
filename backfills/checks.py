"""System checks: problems in declared backfills, reported by ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .exceptions import BackfillConfigurationError
from .registry import registry


@checks.register("backfills")
def check_backfills(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """backfills.E001: the model cannot be resolved or walked; E002: no process hook."""
    from .base import Backfill

    messages: list[checks.CheckMessage] = []
    for backfill_cls in registry:
        try:
            backfill_cls.get_pk_field()
        except BackfillConfigurationError as exc:
            messages.append(
                checks.Error(
                    str(exc),
                    hint="Point `model` at an installed model with a single-column, "
                    "orderable primary key (integer, UUID or string).",
                    obj=backfill_cls,
                    id="backfills.E001",
                )
            )
        overrides = (
            backfill_cls.process_chunk is not Backfill.process_chunk
            or backfill_cls.process_window is not Backfill.process_window
        )
        if not overrides:
            messages.append(
                checks.Error(
                    f"Backfill {backfill_cls.name} does not implement process_chunk().",
                    hint="Define process_chunk(self, rows) (or process_window(self, queryset)).",
                    obj=backfill_cls,
                    id="backfills.E002",
                )
            )
    return messages
