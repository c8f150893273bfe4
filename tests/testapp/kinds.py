"""Backfills of every kind over testapp.Record, with values of every field type."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from django.db.models import F, QuerySet, Value

from backfills import Parameter, RowBackfill, SQLBackfill, UpdateBackfill, register

from .models import Record

WRITTEN = [
    "text",
    "body",
    "number",
    "big",
    "amount",
    "ratio",
    "flag",
    "day",
    "moment",
    "data",
    "token",
]
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def expected_values(pk: int) -> dict[str, Any]:
    """What FillRecords writes for row *pk*: awkward text, NULLs every fifth row, extremes."""
    if pk % 5 == 0:
        return dict.fromkeys(WRITTEN)
    return {
        # PostgreSQL array-literal syntax in the values: quotes, backslashes, braces, commas,
        # and the word NULL, which must stay four letters.
        "text": "NULL" if pk % 7 == 0 else f'O\'Brien "quoted" \\ naïve 日本 ✓ {pk}',
        "body": f'line one\nline two\ttab; DROP TABLE x; -- {{a,"b"}} \\" NULL {pk} ',
        "number": pk * 7 - 1000,
        "big": 2**40 + pk,
        "amount": Decimal("12345678.1234") - pk,
        "ratio": pk / 3,
        "flag": pk % 2 == 0,
        "day": dt.date(2024, 2, 29),
        "moment": dt.datetime(2025, 3, 30, 1, 30, 15, 123456, tzinfo=IST) + dt.timedelta(pk),
        "data": {"k": [1, 2.5, None, True, "é"], "nested": {"pk": pk}, "s": "a'b\"c"},
        "token": uuid.uuid5(uuid.NAMESPACE_OID, str(pk)),
    }


@register
class FillRecords(RowBackfill):
    """Write a value of every field type into each Record (reverse: clear them)."""

    model = "testapp.Record"
    fields = [*WRITTEN, "done"]
    batch_size = 7

    def get_queryset(self) -> QuerySet[Record]:
        return Record.objects.filter(done=False)

    def get_reverse_queryset(self) -> QuerySet[Record]:
        return Record.objects.filter(done=True)

    def transform(self, row: Record) -> None:
        for name, value in expected_values(row.pk).items():
            setattr(row, name, value)
        row.done = True

    def reverse_transform(self, row: Record) -> None:
        for name in WRITTEN:
            setattr(row, name, None)
        row.done = False


@register
class FillRecordsFromRecords(FillRecords):
    """FillRecords loading plain records (``read_fields``), not model instances; it also checks
    that a read column arrives as the ORM would give it."""

    name = "testapp.fill_records_from_records"
    read_fields = ["untouched", "data"]

    def transform(self, row: Any) -> None:
        assert not isinstance(row, Record) and row.untouched == "keep me", row
        assert isinstance(row.data, dict), row.data  # the seeded JSON, decoded
        super().transform(row)


@register
class FillRecordsPrefetching(FillRecordsFromRecords):
    """FillRecordsFromRecords reading and transforming each next chunk ahead, on a second
    connection (PostgreSQL and MySQL/MariaDB; elsewhere it runs like its parent)."""

    name = "testapp.fill_records_prefetching"
    prefetch = True


@register
class BumpRecords(UpdateBackfill):
    """Set-based: number + step, flag true (reverse: number - step, flag false)."""

    model = "testapp.Record"
    batch_size = 7
    parameters = {"step": Parameter(int, default=1, help="added to number")}

    def get_updates(self) -> dict[str, Any]:
        return {"number": F("number") + self.params.step, "flag": Value(True)}

    def get_reverse_updates(self) -> dict[str, Any]:
        return {"number": F("number") - self.params.step, "flag": Value(False)}


@register
class ScaleRecordsSql(SQLBackfill):
    """Raw SQL: big * factor inside each chunk's window (reverse: divide)."""

    model = "testapp.Record"
    batch_size = 7
    parameters = {
        "factor": Parameter(int, default=2, choices=[2, 3, 10]),
        "note": Parameter(str, help="why this runs"),
    }
    sql = "UPDATE testapp_record SET big = big * %(factor)s WHERE {window} AND big IS NOT NULL"
    reverse_sql = {
        "postgresql": "UPDATE testapp_record r SET big = r.big / %(factor)s WHERE {window:r}",
        "mysql": "UPDATE testapp_record r SET r.big = r.big DIV %(factor)s WHERE {window:r}",
        "sqlite": "UPDATE testapp_record SET big = big / %(factor)s WHERE {window}",
    }
