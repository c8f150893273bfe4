"""Input backfills used by the test suite: CSV files and an iterable with a cursor."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from django.db.models import F

from backfills import CSVBackfill, InputBackfill, Parameter, register

from .models import Item


@register
class CountItemsFromCsv(CSVBackfill):
    """Count each Item whose id a CSV file lists (one statement a chunk)."""

    model = "testapp.Item"
    columns: ClassVar[dict[str, Parameter]] = {"id": Parameter(int)}
    batch_size = 1000
    #: Seconds each chunk stays open after its write, so kills land inside chunks.
    hold: ClassVar[float] = 0.0

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        ids = [row["id"] for row in rows]
        Item.objects.using(self.using).filter(pk__in=ids).update(counter=F("counter") + 1)
        if self.hold:
            time.sleep(self.hold)


@register
class ChaosCountItemsFromCsv(CountItemsFromCsv):
    """CountItemsFromCsv holding each chunk open ~30 ms (the chaos test's kills)."""

    name = "testapp.chaos_count_items_from_csv"

    hold = 0.03


@register
class NoteItemsFromCsv(CSVBackfill):
    """Set the note of each listed Item (typed, with choices); a bad line is quarantined."""

    model = "testapp.Item"
    columns: ClassVar[dict[str, Parameter]] = {
        "id": Parameter(int),
        "note": Parameter(str, choices=["gold", "silver", "bronze"]),
        "weight": Parameter(int, default=1),
    }
    quarantine = True
    batch_size = 4

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            Item.objects.using(self.using).filter(pk=row["id"]).update(
                note=f"{row['note']}:{row['weight']}", counter=F("counter") + 1
            )


@register
class StrictNoteItemsFromCsv(NoteItemsFromCsv):
    """NoteItemsFromCsv without quarantine: a bad line fails the run."""

    name = "testapp.strict_note_items_from_csv"

    quarantine = False


#: The "external source" of CountItemsByKeys: keys as another system would page through them.
SOURCE_KEYS: list[int] = list(range(1, 301, 3))


@register
class CountItemsByKeys(InputBackfill):
    """Count the Items whose ids a paged source lists (any iterable with a cursor)."""

    model = "testapp.Item"
    batch_size = 7

    def items_after(self, cursor: Any, limit: int) -> Iterable[int]:
        return [key for key in SOURCE_KEYS if cursor is None or key > cursor][:limit]

    def cursor_of(self, item: int) -> int:
        return item

    def count_items(self) -> int:
        return len(SOURCE_KEYS)

    def process_items(self, items: list[int]) -> int:
        return Item.objects.using(self.using).filter(pk__in=items).update(counter=F("counter") + 1)
