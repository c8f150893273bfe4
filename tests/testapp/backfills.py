"""Backfills used by the test suite."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import F, QuerySet

from backfills import Backfill, register


class CountingBackfill(Backfill):
    """Increment `counter` on every row with needs_work=True."""

    def get_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(needs_work=True)

    def process_chunk(self, rows: list[Any]) -> None:
        for row in rows:
            if row.note == "boom":
                raise ValueError(f"cannot process row {row.pk}: note is 'boom'")
        # Optional per-row delay so interruption tests can catch a run midway.
        delay = float(self.__class__.row_delay)
        if delay:
            time.sleep(delay * len(rows))
        self.model_class._base_manager.using(self.using).filter(
            pk__in=[row.pk for row in rows]
        ).update(counter=F("counter") + 1)

    row_delay: float = 0.0


@register
class CountItems(CountingBackfill):
    """Count each Item once."""

    model = "testapp.Item"
    batch_size = 10


@register
class CountBigItems(CountingBackfill):
    model = "testapp.BigItem"
    batch_size = 10


@register
class CountUuidItems(CountingBackfill):
    model = "testapp.UUIDItem"
    batch_size = 10


@register
class CountCodeItems(CountingBackfill):
    model = "testapp.CodeItem"
    batch_size = 10


@register
class SlowCountItems(CountingBackfill):
    """Count each Item once, slowly (for interruption tests)."""

    model = "testapp.Item"
    name = "testapp.slow_count_items"
    batch_size = 20
    row_delay = 0.002


@register
class CrawlItems(CountingBackfill):
    """Count each Item once, at about one second per chunk (for abort tests)."""

    model = "testapp.Item"
    batch_size = 10
    row_delay = 0.1


@register
class NeedsFutureMigration(CountingBackfill):
    """Requires a migration that does not exist."""

    model = "testapp.Item"
    requires = [("testapp", "9999_not_yet")]


class HoldingCountingBackfill(CountingBackfill):
    """Count rows, then hold the chunk's transaction open for `chunk_delay` seconds.

    The delay comes after the increment and before the checkpoint UPDATE, so a process killed
    during it dies with uncommitted writes: exactly the case the chunk transaction must undo.
    Being per chunk (not per row), a larger --batch-size finishes the remaining rows quickly.
    """

    chunk_delay: float = 0.0

    def process_chunk(self, rows: list[Any]) -> None:
        super().process_chunk(rows)
        time.sleep(float(self.__class__.chunk_delay))


@register
class ChaosCountItems(HoldingCountingBackfill):
    """Count each Item once, holding each 50-row chunk open ~30 ms (chaos and control tests)."""

    model = "testapp.Item"
    name = "testapp.chaos_count_items"
    batch_size = 50
    chunk_delay = 0.03


from .kinds import *  # noqa: E402,F403  (registers the Record backfills)
