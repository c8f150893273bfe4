"""Walks on keys of several columns, on every database: a ``CompositePrimaryKey`` (TenantItem,
keyed by (tenant, number)) and ``chunk_by`` on another unique key (KeyedItem, by (group, code)).

Keys mix text and numbers, with most rows sharing a few values of the leading column, text
that sorts differently by case, accent and as numbers, and integers from -2**31 to 2**31 - 1.
Which order is right is the database's to say: every expectation here reads it back with
ORDER BY, never sorts in Python.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connection, models

from backfills import Outcome, run_backfill
from backfills.chunking import Key, next_window, primary_key
from backfills.events import ChunkCommitted, Event
from backfills.exceptions import BackfillConfigurationError, BackfillFailed
from backfills.models import BackfillPartition, BackfillRun, QuarantinedRow
from backfills.registry import registry
from tests.testapp.backfills import CountingBackfill
from tests.testapp.models import KeyedItem, TenantItem, tenant_keys

pytestmark = pytest.mark.django_db(transaction=True)

USING = DEFAULT_DB_ALIAS
ROWS = 2000
TENANT_KEY = ("tenant", "number")
KEYED_KEY = ("group", "code")


def seed_tenant_items(count: int = ROWS) -> int:
    """Insert *count* TenantItems in random key order, every 13th not needing work; return
    how many need it."""
    rows = [
        TenantItem(tenant=tenant, number=number, needs_work=i % 13 != 5)
        for i, (tenant, number) in enumerate(tenant_keys(count))
    ]
    TenantItem.objects.bulk_create(rows, batch_size=500)
    return sum(row.needs_work for row in rows)


def seed_keyed_items(count: int = 1000) -> int:
    """Insert *count* KeyedItems whose ids follow neither (group, code) nor (code, group):
    groups repeat a lot, codes mix letters, numbers and the empty string."""
    rng = random.Random(7)
    groups = [-(2**31), -7, 0, 3, 42, 2**31 - 1]
    keys: set[tuple[int, str]] = set()
    while len(keys) < count:
        group = rng.choices(groups, weights=[1, 6, 3, 2, 1, 1])[0]
        code = rng.choice(["", f"c{rng.randint(0, 500)}", f"K{rng.randint(-9, 99)}"])
        keys.add((group, code))
    ordered = sorted(keys)
    rng.shuffle(ordered)
    rows = [
        KeyedItem(group=group, code=code, needs_work=i % 11 != 3)
        for i, (group, code) in enumerate(ordered)
    ]
    KeyedItem.objects.bulk_create(rows, batch_size=500)
    return sum(row.needs_work for row in rows)


def in_key_order(model: type[models.Model], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """(key, counter, needs_work) of every row, in the database's order of the key."""
    rows = model._base_manager.order_by(*names).values_list(*names, "counter", "needs_work")
    return [(tuple(row[: len(names)]), row[-2], row[-1]) for row in rows]


def assert_counted_up_to(
    model: type[models.Model], names: Sequence[str], cursor: str | None
) -> int:
    """Rows needing work up to the JSON *cursor* (in key order) were counted once, no other
    row at all; return the position after the cursor."""
    rows = in_key_order(model, names)
    keys = [key for key, _, _ in rows]
    done = 0 if cursor is None else keys.index(tuple(json.loads(cursor))) + 1
    expected = [int(needs) if i < done else 0 for i, (_, _, needs) in enumerate(rows)]
    assert [counter for _, counter, _ in rows] == expected
    return done


class Recorder:
    """Collects the run's events; after every committed chunk, checks that the data matches
    the checkpoint: the walk goes in key order and commits each chunk with its cursor."""

    def __init__(self, model: type[models.Model] | None = None, names: Sequence[str] = ()) -> None:
        self.events: list[Event] = []
        self.model = model
        self.names = names

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.model is not None and isinstance(event, ChunkCommitted):
            assert_counted_up_to(self.model, self.names, event.run.cursor)

    def sizes(self) -> list[int]:
        return [e.window_size for e in self.events if isinstance(e, ChunkCommitted)]


def sizes_of(total: int, batch: int) -> list[int]:
    return [batch] * (total // batch) + ([total % batch] if total % batch else [])


# -- a composite primary key -------------------------------------------------------------------

TENANT_BACKFILLS = [
    ("testapp.count_tenant_items", 7),  # plain Backfill: process_chunk(rows)
    ("testapp.transform_tenant_items", 10),  # RowBackfill on model instances
    ("testapp.transform_tenant_item_records", 13),  # RowBackfill on read_fields records
    ("testapp.bump_tenant_items", 37),  # UpdateBackfill
    ("testapp.bump_tenant_items_sql", 37),  # SQLBackfill with {window}
]


@pytest.mark.parametrize(("name", "batch"), TENANT_BACKFILLS, ids=[n for n, _ in TENANT_BACKFILLS])
def test_a_composite_key_walk_processes_every_row_exactly_once(name: str, batch: int) -> None:
    needing = seed_tenant_items()
    recorder = Recorder()

    result = run_backfill(name, batch_size=batch, listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    rows = in_key_order(TenantItem, TENANT_KEY)
    assert Counter((needs, counter) for _, counter, needs in rows) == {
        (True, 1): needing,
        (False, 0): ROWS - needing,
    }
    run = BackfillRun.objects.get()
    assert run.state == BackfillRun.State.COMPLETED
    assert run.rows_scanned == run.rows_total == ROWS
    assert run.rows_processed == needing
    assert run.chunks_done == math.ceil(ROWS / batch)
    assert recorder.sizes() == sizes_of(ROWS, batch)
    assert run.active_key is None and run.owner_token is None
    # The checkpoint is the last key walked, both columns, as JSON.
    last_key = rows[-1][0]
    assert json.loads(run.cursor) == list(last_key)


def test_each_chunk_commits_the_rows_up_to_its_cursor_in_key_order() -> None:
    seed_tenant_items(600)
    recorder = Recorder(TenantItem, TENANT_KEY)

    result = run_backfill("testapp.count_tenant_items", batch_size=17, listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    assert len(recorder.sizes()) == math.ceil(600 / 17)


@pytest.mark.parametrize(
    "name",
    [
        "testapp.transform_tenant_items",
        "testapp.transform_tenant_item_records",
        "testapp.bump_tenant_items",
        "testapp.bump_tenant_items_sql",  # {window:t}: the table aliased on PostgreSQL, MySQL
    ],
)
def test_a_composite_key_walk_reverses(name: str) -> None:
    needing = seed_tenant_items(500)
    assert run_backfill(name, batch_size=9).outcome is Outcome.COMPLETED
    assert TenantItem.objects.filter(counter=1).count() == needing

    result = run_backfill(name, batch_size=11, reverse=True)

    assert result.outcome is Outcome.COMPLETED
    assert set(TenantItem.objects.values_list("counter", flat=True)) == {0}
    assert result.run.rows_scanned == 500


def test_a_stopped_composite_walk_resumes_from_its_json_cursor(
    run_command: Callable[..., tuple[str, str]],
) -> None:
    needing = seed_tenant_items()
    name = "testapp.count_tenant_items"

    first = run_backfill(name, max_chunks=5, batch_size=10)

    assert first.outcome is Outcome.PAUSED
    run = BackfillRun.objects.get()
    assert run.chunks_done == 5 and run.rows_scanned == 50
    assert assert_counted_up_to(TenantItem, TENANT_KEY, run.cursor) == 50
    tenant, number = json.loads(run.cursor or "")
    out, _ = run_command("status", name)
    assert f"at cursor key ({tenant}, {number})" in out, out
    # Resumed with another chunk size and a row limit: chunks shrink to fit it.
    second = run_backfill(name, limit=75, batch_size=20)
    assert second.outcome is Outcome.PAUSED
    run.refresh_from_db()
    assert run.rows_scanned == 125
    assert assert_counted_up_to(TenantItem, TENANT_KEY, run.cursor) == 125

    third = run_backfill(name, batch_size=50)

    assert third.outcome is Outcome.COMPLETED
    assert BackfillRun.objects.count() == 1
    run.refresh_from_db()
    assert (run.rows_scanned, run.rows_processed) == (ROWS, needing)
    assert assert_counted_up_to(TenantItem, TENANT_KEY, run.cursor) == ROWS


def test_a_failed_chunk_rolls_back_and_the_run_resumes_at_it() -> None:
    seed_tenant_items(300)
    rows = in_key_order(TenantItem, TENANT_KEY)
    bad = rows[24][0]  # in the third window of 10
    TenantItem.objects.filter(pk=bad).update(note="boom", needs_work=True)

    with pytest.raises(BackfillFailed, match="chunk 3"):
        run_backfill("testapp.count_tenant_items", batch_size=10)

    run = BackfillRun.objects.get()
    assert run.state == BackfillRun.State.FAILED and run.chunks_done == 2
    assert json.loads(run.cursor) == list(rows[19][0])
    assert assert_counted_up_to(TenantItem, TENANT_KEY, run.cursor) == 20

    TenantItem.objects.filter(pk=bad).update(note="")
    assert run_backfill("testapp.count_tenant_items").outcome is Outcome.COMPLETED
    assert assert_counted_up_to(TenantItem, TENANT_KEY, BackfillRun.objects.get().cursor) == 300


def test_a_failing_row_of_a_composite_key_is_quarantined_in_a_2000_row_chunk() -> None:
    needing = seed_tenant_items(3000)
    keys = in_key_order(TenantItem, TENANT_KEY)
    bad = [keys[700][0], keys[2100][0]]
    for tenant, number in bad:
        TenantItem.objects.filter(tenant=tenant, number=number).update(note="boom", needs_work=True)
    needing = TenantItem.objects.filter(needs_work=True).count()

    result = run_backfill("testapp.quarantine_tenant_items")

    assert result.outcome is Outcome.COMPLETED
    assert (result.run.rows_processed, result.run.rows_failed) == (needing - 2, 2)
    quarantined = QuarantinedRow.objects.order_by("id").values_list("row_pk", flat=True)
    assert sorted(tuple(json.loads(text)) for text in quarantined) == sorted(
        (str(tenant), str(number)) for tenant, number in bad
    )
    assert TenantItem.objects.filter(note="boom").exclude(counter=0).count() == 0
    assert TenantItem.objects.filter(needs_work=True, counter=1).count() == needing - 2


def test_rows_inserted_above_the_horizon_are_not_chased() -> None:
    seed_tenant_items(200)
    (tenant, _), _, _ = in_key_order(TenantItem, TENANT_KEY)[-1]
    # Longer text with the same start sorts after it in every collation.
    above = [(f"{tenant}z", -5), (f"{tenant}zz", 0)]

    def insert_after_first_chunk(event: Event) -> None:
        if isinstance(event, ChunkCommitted) and event.run.chunks_done == 1:
            TenantItem.objects.bulk_create(TenantItem(tenant=t, number=n) for t, n in above)

    result = run_backfill(
        "testapp.count_tenant_items", batch_size=10, listeners=[insert_after_first_chunk]
    )

    assert result.outcome is Outcome.COMPLETED and result.run.rows_scanned == 200
    inserted = TenantItem.objects.filter(pk__in=above)
    assert inserted.count() == len(above)
    assert set(inserted.values_list("counter", flat=True)) == {0}


@pytest.mark.parametrize(
    ("name", "model", "names", "seed"),
    [
        ("testapp.count_tenant_items", TenantItem, TENANT_KEY, seed_tenant_items),
        # chunk_by: ranges on (group, code), which the ids follow in neither order.
        ("testapp.count_keyed_items", KeyedItem, KEYED_KEY, seed_keyed_items),
    ],
    ids=["composite-pk", "chunk_by"],
)
def test_one_worker_walks_a_parallel_run_on_a_key_of_several_columns(
    name: str, model: type[models.Model], names: Sequence[str], seed: Callable[[], int]
) -> None:
    from backfills.engine.parallel import start_parallel
    from backfills.engine.workers import run_worker

    needing = seed()
    rows = model._base_manager.count()
    run = start_parallel(registry.get(name), workers=1).run
    partitions = list(BackfillPartition.objects.filter(run=run).order_by("pk"))
    assert len(partitions) > 1
    # Contiguous ranges on the whole key, stored as JSON.
    assert partitions[0].lower is None
    for before, after in zip(partitions, partitions[1:], strict=False):
        assert before.upper == after.lower
    assert json.loads(partitions[-1].upper) == list(in_key_order(model, names)[-1][0])

    result = run_worker(run_ids=[run.pk], exit_when_idle=True, idle_poll=0.05)

    assert result.completed_runs == [run.pk]
    assert Counter(model._base_manager.values_list("needs_work", "counter")) == {
        (True, 1): needing,
        (False, 0): rows - needing,
    }
    run.refresh_from_db()
    assert run.state == "completed" and run.rows_scanned == rows


@pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite has one writer: parallel runs need 1 worker"
)
def test_two_worker_processes_share_a_composite_key_run_and_split_it() -> None:
    from tests.conftest import manage

    needing = seed_tenant_items()
    code, out, err = manage(
        ["backfill", "run", "testapp.count_tenant_items", "--workers", "2"], project="tests"
    )

    assert code == 0, err
    run = BackfillRun.objects.get()
    assert (run.state, run.rows_scanned, run.workers) == ("completed", ROWS, 2)
    owners = set(BackfillPartition.objects.filter(run=run).values_list("owner_pid", flat=True))
    assert len(owners) == 2
    assert Counter(TenantItem.objects.values_list("needs_work", "counter")) == {
        (True, 1): needing,
        (False, 0): ROWS - needing,
    }


def test_a_composite_key_range_splits_at_a_key_inside_it() -> None:
    from backfills.chunking import count_range, plan_partitions, split_point

    seed_tenant_items()
    key = primary_key(TenantItem)
    last = in_key_order(TenantItem, TENANT_KEY)[-1][0]
    ranges = plan_partitions(key, USING, last, 4, ROWS)
    assert [count_range(key, USING, lower, upper) for lower, upper in ranges] == [500] * 4
    lower, upper = ranges[1]
    middle = split_point(key, USING, lower, upper)
    assert count_range(key, USING, lower, middle) == 250
    assert count_range(key, USING, middle, upper) == 250


# -- chunk_by: another unique key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "batch"), [("testapp.count_keyed_items", 10), ("testapp.bump_keyed_items_sql", 23)]
)
def test_a_chunk_by_walk_goes_in_the_key_order_and_processes_every_row_once(
    name: str, batch: int
) -> None:
    needing = seed_keyed_items()
    # Walked by (group, code): after each chunk, a prefix of that order is counted, which a
    # walk by id would not give.
    recorder = Recorder(KeyedItem, KEYED_KEY)

    result = run_backfill(name, batch_size=batch, listeners=[recorder])

    assert result.outcome is Outcome.COMPLETED
    assert Counter(KeyedItem.objects.values_list("needs_work", "counter")) == {
        (True, 1): needing,
        (False, 0): 1000 - needing,
    }
    run = BackfillRun.objects.get()
    assert (run.rows_scanned, run.rows_processed) == (1000, needing)
    assert recorder.sizes() == sizes_of(1000, batch)
    assert json.loads(run.cursor) == list(in_key_order(KeyedItem, KEYED_KEY)[-1][0])


def test_a_stopped_chunk_by_walk_resumes_from_its_json_cursor() -> None:
    needing = seed_keyed_items(300)

    first = run_backfill("testapp.count_keyed_items", max_chunks=4, batch_size=10)

    assert first.outcome is Outcome.PAUSED
    assert assert_counted_up_to(KeyedItem, KEYED_KEY, first.run.cursor) == 40
    assert run_backfill("testapp.count_keyed_items").outcome is Outcome.COMPLETED
    run = BackfillRun.objects.get()
    assert run.rows_processed == needing
    assert assert_counted_up_to(KeyedItem, KEYED_KEY, run.cursor) == 300


# -- backfills.E007: a chunk_by that is not a unique, non-null key --------------------------------


def by(label: str, model: str, chunk_by: str | tuple[str, ...]) -> type[CountingBackfill]:
    attrs = {"name": f"tests.by_{label}", "model": model, "chunk_by": chunk_by}
    return type(f"By{label.title()}", (CountingBackfill,), {**attrs, "__module__": __name__})


@pytest.fixture
def registered() -> Iterator[list[type[CountingBackfill]]]:
    """Classes registered for the test only."""
    classes: list[type[CountingBackfill]] = []
    yield classes
    for cls in classes:
        registry.unregister(cls.name)


def e007(classes: Sequence[type[CountingBackfill]]) -> dict[str, checks.CheckMessage]:
    from backfills.checks import check_backfills

    errors = {m.obj.name: m for m in check_backfills() if m.id == "backfills.E007"}
    assert set(errors) <= {cls.name for cls in classes}, errors  # never the suite's own
    return errors


def test_e007_reports_a_chunk_by_that_is_not_unique_or_allows_null(
    registered: list[type[CountingBackfill]],
) -> None:
    bad = {
        "leading_column": by("leading_column", "testapp.KeyedItem", ("group",)),
        "other_column": by("other_column", "testapp.TenantItem", "note"),
        "nullable": by("nullable", "blog.Post", "slug"),  # unique, but NULL is allowed
    }
    good = {
        "constraint": by("constraint", "testapp.KeyedItem", ("group", "code")),
        "one_unique_field": by("one_unique_field", "testapp.KeyedItem", "id"),
        "composite_pk": by("composite_pk", "testapp.TenantItem", ("tenant", "number")),
    }
    for cls in [*bad.values(), *good.values()]:
        registered.append(registry.register(cls))

    errors = e007(registered)

    assert set(errors) == {cls.name for cls in bad.values()}
    for error in errors.values():
        assert isinstance(error, checks.Error)
        assert "chunk_by" in error.msg and error.hint
    assert "null" in errors["tests.by_nullable"].msg.lower()
    assert "unique" in errors["tests.by_leading_column"].msg.lower()
    # And a run is refused before it touches a row.
    seed_keyed_items(20)
    with pytest.raises(BackfillConfigurationError, match="chunk_by"):
        run_backfill(bad["leading_column"])
    assert not KeyedItem.objects.filter(counter__gt=0).exists()
    assert not BackfillRun.objects.exists()


def test_the_suites_composite_and_chunk_by_backfills_pass_the_checks() -> None:
    from backfills.checks import check_backfills

    ours = {
        "testapp.count_tenant_items",
        "testapp.transform_tenant_item_records",
        "testapp.bump_tenant_items_sql",
        "testapp.count_keyed_items",
        "testapp.bump_keyed_items_sql",
    }
    assert [m for m in check_backfills() if getattr(m.obj, "name", None) in ours] == []


# -- the plans: an index range, never a scan of the table --------------------------------------


def captured(action: Any) -> list[tuple[str, Sequence[Any]]]:
    """The statements (SQL and parameters) *action* sends on the default connection."""
    statements: list[tuple[str, Sequence[Any]]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        action()
    return statements


def explain(sql: str, params: Sequence[Any]) -> Any:
    """The plan of a statement: PostgreSQL's text, MySQL/MariaDB's rows (as dicts), SQLite's
    EXPLAIN QUERY PLAN details."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return [row[-1] for row in cursor.fetchall()]
        cursor.execute(f"EXPLAIN {sql}", params)
        if connection.vendor == "postgresql":
            return "\n".join(row[0] for row in cursor.fetchall())
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def assert_index_range(plan: Any, table: str, index: str, sql: str) -> None:
    """*plan* reads *table* through a range of *index*, never scanning the table."""
    shown = f"{sql}\n{plan}"
    if connection.vendor == "postgresql":
        # An index scan, index-only scan or bitmap index scan of the key's index: each reads
        # the range its Index Cond gives.
        assert "Seq Scan" not in plan, shown
        scans = ("Index Scan using", "Index Only Scan using", "Bitmap Index Scan on")
        assert any(f"{scan} {index}" in plan for scan in scans), shown
        assert "Index Cond" in plan, shown
    elif connection.vendor == "mysql":
        (row,) = [row for row in plan if row["table"] in (table, "t")]
        assert (row["type"], row["key"]) == ("range", index), shown
    else:
        searches = [line for line in plan if line.startswith(f"SEARCH {table} USING")]
        assert any(index in line for line in searches), shown
        assert not any(line.startswith("SCAN") for line in plan), shown


def analyze(table: str) -> None:
    """Fresh statistics, as a production table has: the planners choose on them."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")
        elif connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {table}")
            cursor.fetchall()
        else:
            cursor.execute(f"ANALYZE {table}")


def index_of(key: Key) -> str:
    """The index the walk of *key* should use, as each vendor names it in a plan."""
    table = key.model._meta.db_table
    if connection.vendor == "sqlite":
        # A primary key or unique constraint of several columns is declared in CREATE TABLE.
        return f"sqlite_autoindex_{table}_"
    if key.is_pk:
        return {"postgresql": f"{table}_pkey", "mysql": "PRIMARY"}[connection.vendor]
    (constraint,) = key.model._meta.total_unique_constraints
    return constraint.name


def seed_one_big_tenant() -> None:
    """20,000 rows, 95% of them in one tenant: PostgreSQL estimates a row comparison from
    its leading column, so a window inside that tenant looks like a large share of it."""
    rows = [TenantItem(tenant="a", number=n) for n in range(-9500, 9500)]
    rows += [TenantItem(tenant="b", number=n) for n in range(1000)]
    TenantItem.objects.bulk_create(rows, batch_size=5000)


WALKS = [
    ("testapp.count_tenant_items", TenantItem, lambda: seed_tenant_items()),
    ("testapp.count_tenant_items", TenantItem, seed_one_big_tenant),
    ("testapp.count_keyed_items", KeyedItem, lambda: seed_keyed_items()),
]


@pytest.mark.parametrize(
    ("name", "model", "seed"), WALKS, ids=["composite", "composite-one-big-tenant", "chunk_by"]
)
def test_the_window_queries_use_an_index_range(name: str, model: Any, seed: Any) -> None:
    seed()
    analyze(model._meta.db_table)
    backfill_cls = registry.get(name)
    key = backfill_cls.get_key()
    assert key.model is model and len(key.fields) == 2
    if model is TenantItem:
        assert key == primary_key(TenantItem)
    table, index = model._meta.db_table, index_of(key)
    rows = in_key_order(model, key.names)
    cursor, horizon = rows[len(rows) // 3][0], rows[-1][0]

    # The window's upper bound: the 50th key after the cursor, on the index alone.
    statements = captured(lambda: next_window(key, USING, cursor, horizon, 50))
    assert statements
    bound_sql, bound_params = statements[0]
    window = next_window(key, USING, cursor, horizon, 50)
    assert window is not None and window.size == 50
    assert_index_range(explain(bound_sql, bound_params), table, index, bound_sql)

    # The chunk's rows: the backfill's filter inside that window.
    chunk = window.ordered(backfill_cls(using=USING).get_queryset())
    sql, params = chunk.query.sql_with_params()
    assert_index_range(explain(sql, params), table, index, sql)
    assert len(chunk) == sum(needs for _, _, needs in rows[len(rows) // 3 + 1 :][:50])


@pytest.mark.parametrize(
    "name", ["testapp.bump_tenant_items", "testapp.bump_tenant_items_sql"], ids=["orm", "sql"]
)
def test_a_set_based_chunk_updates_through_an_index_range(name: str) -> None:
    seed_tenant_items()
    analyze(TenantItem._meta.db_table)
    run_backfill(name, max_chunks=20, batch_size=25)  # a cursor well inside the table

    statements = captured(lambda: run_backfill(name, max_chunks=1, batch_size=25))

    updates = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("UPDATE") and "tenantitem" in sql
    ]
    assert len(updates) == 1, statements
    sql, params = updates[0]
    key = primary_key(TenantItem)
    assert_index_range(explain(sql, params), TenantItem._meta.db_table, index_of(key), sql)


def test_without_statistics_the_window_still_wins_over_a_filter_index() -> None:
    """The example's translations filter on ``slug IS NULL``, and ``slug`` has an index:
    SQLite, which has no statistics until someone runs ANALYZE (most never do), took that
    index for the selective one and read every unfilled row a chunk. The window must be the
    range it reads. PostgreSQL and MariaDB choose on statistics, so they get them first (a
    fresh table without any looks tiny to them, and any plan is cheap)."""
    from blog.models import Post, PostTranslation

    Post.objects.bulk_create([Post(title=f"post {i}") for i in range(1500)])
    posts = list(Post.objects.values_list("pk", flat=True))
    PostTranslation.objects.bulk_create(
        [PostTranslation(post_id=p, language=lang, title="t") for p in posts for lang in "de fr"]
    )
    if connection.vendor != "sqlite":
        analyze(PostTranslation._meta.db_table)
    backfill_cls = registry.get("blog.fill_translation_slugs")
    key = backfill_cls.get_key()
    rows = list(key.values(PostTranslation.objects.all()))
    window = next_window(key, USING, rows[1000], rows[-1], 100)
    assert window is not None
    chunk = window.ordered(backfill_cls(using=USING).get_queryset())
    sql, params = chunk.query.sql_with_params()
    table = PostTranslation._meta.db_table
    index = index_of(key) if connection.vendor != "postgresql" else f"{table}_pkey"
    plan = explain(sql, params)
    if connection.vendor == "postgresql":
        # PostgreSQL ranges over the key's leading column (its own post_id index or the
        # primary key), never the slug index.
        assert "Seq Scan" not in plan and "slug" not in plan.split("Filter")[0], plan
    else:
        assert_index_range(plan, table, index, sql)
    assert len(chunk) == 100
