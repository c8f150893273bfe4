"""Backfills used by the test suite."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, ClassVar

from django.db.models import F, QuerySet

from backfills import Backfill, RowBackfill, SQLBackfill, UpdateBackfill, register


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
        table = self.model_class._base_manager.using(self.using)
        # A composite key's pk__in is an OR of ANDs on SQLite (no IN over row values), and
        # SQLite refuses expressions deeper than 1,000: at most 500 keys a statement.
        for start in range(0, len(rows), 500):
            keys = [row.pk for row in rows[start : start + 500]]
            table.filter(pk__in=keys).update(counter=F("counter") + 1)

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


@register
class HoldLocksItems(CountingBackfill):
    """Count each Item once, then keep the chunk's row locks for `hold_per_row` seconds a
    row before committing: work that takes longer with more rows (the blocking guard's tests)."""

    model = "testapp.Item"
    name = "testapp.hold_locks_items"
    batch_size = 100
    hold_per_row: float = 0.0

    def process_chunk(self, rows: list[Any]) -> None:
        super().process_chunk(rows)
        time.sleep(float(self.__class__.hold_per_row) * len(rows))


@register
class PrefetchCountItems(RowBackfill):
    """Count each Item once with a row backfill that reads each next chunk ahead (prefetch).

    ``counter`` is read and written back plus one, so a chunk written twice shows as 2, and the
    threads ``transform`` ran in are counted. Like ChaosCountItems it holds each chunk's
    transaction open for ``chunk_delay`` seconds after its write, for the chaos test."""

    model = "testapp.Item"
    name = "testapp.prefetch_count_items"
    fields = ["counter"]
    read_fields = ["counter", "note"]
    batch_size = 50
    prefetch = True
    chunk_delay = 0.03
    threads: ClassVar[Counter[str]] = Counter()  # rows transformed per thread name

    def get_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(needs_work=True)

    def transform(self, row: Any) -> None:
        if row.note == "boom":
            raise ValueError(f"cannot process row {row.pk}: note is 'boom'")
        type(self).threads[threading.current_thread().name] += 1
        row.counter += 1

    def write_rows(self, rows: Any, fields: Any) -> int:
        written = super().write_rows(rows, fields)
        time.sleep(float(type(self).chunk_delay))
        return written


@register
class PrefetchQuarantineItems(PrefetchCountItems):
    """PrefetchCountItems quarantining the rows it cannot process."""

    name = "testapp.prefetch_quarantine_items"
    quarantine = True
    chunk_delay = 0.0


# -- walks on other keys: a composite primary key (TenantItem) and chunk_by (KeyedItem) --------


@register
class CountTenantItems(CountingBackfill):
    """Count each TenantItem once: a walk on the composite primary key (tenant, number)."""

    model = "testapp.TenantItem"
    batch_size = 10


@register
class QuarantineTenantItems(CountingBackfill):
    """CountTenantItems in 2,000-row chunks with quarantine: a 'boom' row is isolated by
    halving key ranges."""

    model = "testapp.TenantItem"
    batch_size = 2000
    quarantine = True


@register
class TransformTenantItems(RowBackfill):
    """Count each TenantItem once with a row backfill on model instances (reverse: uncount)."""

    model = "testapp.TenantItem"
    fields = ["counter"]
    batch_size = 10

    def get_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(needs_work=True)

    def get_reverse_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(counter__gt=0)

    def transform(self, row: Any) -> None:
        row.counter += 1

    def reverse_transform(self, row: Any) -> None:
        row.counter -= 1


@register
class TransformTenantItemRecords(TransformTenantItems):
    """TransformTenantItems on ``read_fields`` records: each carries both key columns and
    ``pk`` as their tuple."""

    name = "testapp.transform_tenant_item_records"
    read_fields = ["note"]

    def transform(self, row: Any) -> None:
        assert row.pk == (row.tenant, row.number), row
        super().transform(row)


@register
class BumpTenantItems(UpdateBackfill):
    """Set-based: count each TenantItem once in one UPDATE per chunk (reverse: uncount)."""

    model = "testapp.TenantItem"
    batch_size = 10
    updates = {"counter": F("counter") + 1}
    reverse_updates = {"counter": F("counter") - 1}

    def get_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(needs_work=True)

    def get_reverse_queryset(self) -> QuerySet[Any]:
        return self.model_class.objects.filter(counter__gt=0)


@register
class BumpTenantItemsSql(SQLBackfill):
    """Raw SQL: count each TenantItem once inside the chunk's window on both key columns
    (reverse: uncount, with the table aliased where the vendor allows)."""

    model = "testapp.TenantItem"
    batch_size = 10
    sql = "UPDATE testapp_tenantitem SET counter = counter + 1 WHERE {window} AND needs_work"
    reverse_sql = {
        "postgresql": "UPDATE testapp_tenantitem t SET counter = t.counter - 1 "
        "WHERE {window:t} AND t.counter > 0",
        "mysql": "UPDATE testapp_tenantitem t SET t.counter = t.counter - 1 "
        "WHERE {window:t} AND t.counter > 0",
        "sqlite": "UPDATE testapp_tenantitem SET counter = counter - 1 "
        "WHERE {window} AND counter > 0",
    }


@register
class ChaosCountTenantItems(HoldingCountingBackfill):
    """ChaosCountItems on the composite primary key (the chaos test)."""

    model = "testapp.TenantItem"
    name = "testapp.chaos_count_tenant_items"
    batch_size = 50
    chunk_delay = 0.03


@register
class PrefetchCountTenantItems(PrefetchCountItems):
    """PrefetchCountItems on the composite primary key (the chaos test)."""

    model = "testapp.TenantItem"
    name = "testapp.prefetch_count_tenant_items"
    threads: ClassVar[Counter[str]] = Counter()


@register
class CountKeyedItems(CountingBackfill):
    """Count each KeyedItem once, walking (group, code), not the primary key."""

    model = "testapp.KeyedItem"
    chunk_by = ("group", "code")
    batch_size = 10


@register
class BumpKeyedItemsSql(SQLBackfill):
    """Raw SQL on the chunk_by window: ``group`` is a reserved word, quoted by ``{window}``."""

    model = "testapp.KeyedItem"
    chunk_by = ("group", "code")
    batch_size = 10
    sql = "UPDATE testapp_keyeditem SET counter = counter + 1 WHERE {window} AND needs_work"


from .kinds import *  # noqa: E402,F403  (registers the Record backfills)

# isort: split
from backfills.parameters import Parameter  # noqa: E402

from .kinds import FillRecords  # noqa: E402
from .models import Item  # noqa: E402


@register
class FillRecordsAbove(FillRecords):
    """FillRecords on the records whose pk is above ``--param above=N``: ``get_queryset()``
    reads a required parameter (RequireBackfill must build it with the run's parameters)."""

    name = "testapp.fill_records_above"
    parameters = {"above": Parameter(int, help="only records with a greater pk")}

    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().filter(pk__gt=self.params.above)


@register
class QuarantineStepItems(Backfill):
    """Add ``--param step=N`` to each Item's counter, quarantining the rows that fail; the
    reverse takes a step off again. Which step ``retry-failed`` adds shows which run's
    parameters it used."""

    model = "testapp.Item"
    name = "testapp.quarantine_step_items"
    batch_size = 10
    quarantine = True
    parameters = {"step": Parameter(int, default=1, help="added to counter")}

    def get_queryset(self) -> QuerySet[Item]:
        return Item.objects.filter(needs_work=True)

    def get_reverse_queryset(self) -> QuerySet[Item]:
        return Item.objects.filter(counter__gt=0)

    def process_chunk(self, rows: list[Any]) -> None:
        for row in rows:
            if row.note == "boom":
                raise ValueError(f"cannot process row {row.pk}: note is 'boom'")
        self._add(rows, self.params.step)

    def process_reverse_chunk(self, rows: list[Any]) -> None:
        self._add(rows, -self.params.step)

    def _add(self, rows: list[Any], amount: int) -> None:
        Item.objects.using(self.using).filter(pk__in=[row.pk for row in rows]).update(
            counter=F("counter") + amount
        )


from .inputs import *  # noqa: E402,F403  (registers the input backfills)
