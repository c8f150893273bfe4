"""write_rows prepares values exactly as ``Field.get_db_prep_save`` does, on every backend."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.backends.base.operations import BaseDatabaseOperations
from django.utils.functional import lazy

from backfills.writers import save_preparer
from tests.testapp.models import BigItem, CodeItem, Item, Record, UUIDItem

SAMPLES: list[Any] = [
    None,
    "",
    "O'Brien ✓",
    lazy(lambda: "lazy text", str)(),
    0,
    7,
    -(2**40),
    True,
    1.5,
    Decimal("1.2500"),
    dt.date(2024, 2, 29),
    dt.datetime(2025, 3, 30, 1, 30, tzinfo=dt.UTC),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {"k": [1, None]},
]

FIELDS = [
    *Record._meta.concrete_fields,
    Item._meta.get_field("counter"),
    Item._meta.get_field("note"),
    BigItem._meta.pk,
    UUIDItem._meta.pk,
    CodeItem._meta.pk,
]


def outcome(call: Any, value: Any) -> tuple[str, str]:
    try:
        result = call(value)
    except Exception as exc:
        return ("raises", type(exc).__name__)
    return (type(result).__name__, repr(result))


@pytest.mark.django_db  # some backends read the server version while preparing values
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime")
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.model.__name__}.{f.name}")
def test_save_preparer_gives_what_get_db_prep_save_gives(field: Any) -> None:
    prepare = save_preparer(field, connection)
    for value in SAMPLES:
        expected = outcome(lambda v: field.get_db_prep_save(v, connection), value)
        assert outcome(prepare, value) == expected, (field, value)


def test_text_and_integer_fields_take_the_fast_path() -> None:
    fast = {
        f.name: save_preparer(f, connection).__name__ == "fast"
        for f in Record._meta.concrete_fields
    }
    assert fast["text"] and fast["body"]
    # PostgreSQL wraps integers for psycopg (Int4, Int8): there they take the full path.
    plain_ints = (
        type(connection.ops).adapt_integerfield_value
        is BaseDatabaseOperations.adapt_integerfield_value
    )
    assert fast["number"] == fast["big"] == plain_ints
    # An AutoField is validated, not adapted: fast unless the backend validates (MySQL).
    auto_fast = save_preparer(Item._meta.pk, connection).__name__ == "fast"
    assert auto_fast == (connection.vendor != "mysql")
    # Types whose preparation converts the value always take the full path.
    assert not any(fast[name] for name in ("amount", "day", "moment", "data", "token", "flag"))


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgresql_array_literals_round_trip() -> None:
    from backfills.db.postgresql import pg_array as _pg_array

    texts = ["", "NULL", None, 'a"b', "c\\d", '\\"', "{x,y}", " spaced ", "é✓\n\t"]
    numbers = [0, -(2**40), 7, int(True) + 1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[], %s::bigint[]", [_pg_array(texts), _pg_array(numbers)])
        assert cursor.fetchone() == (texts, numbers)
    # Anything else stays a list for psycopg to adapt.
    assert _pg_array([1, "x"]) == [1, "x"] and _pg_array([True]) == [True]


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor == 'sqlite'")  # SQLite does not enforce lengths
def test_an_over_long_value_raises_instead_of_being_truncated() -> None:
    from django.db import DataError

    from backfills.writers import write_rows

    record = Record.objects.create()
    record.text = "x" * 201  # max_length=200
    with pytest.raises(DataError, match="too long"):
        write_rows(Record, [record], ["text"], "default")


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'mysql' or not connection.mysql_is_mariadb")
def test_mariadb_writes_a_chunk_as_one_values_list_not_a_select_per_row() -> None:
    """A UNION of one SELECT per row made the server parse and plan thousands of query blocks
    per chunk; the rows after the first go as one table value constructor."""
    from django.db import connection

    from backfills.writers import build_writes, execute_writes

    records = [Record.objects.create(text=f"before {i}") for i in range(3)]
    for i, record in enumerate(records):
        record.text = f'it\'s "{i}" \\ ünï'
    ((sql, params),) = build_writes(Record, records, ["text"], connection) or []
    assert "UNION ALL VALUES (%s, %s), (%s, %s)" in sql and "UNION ALL SELECT" not in sql
    assert execute_writes([(sql, params)], "default") == 3
    assert [r.text for r in Record.objects.order_by("pk")] == [r.text for r in records]

    ((single, _),) = build_writes(Record, records[:1], ["text"], connection) or []
    assert "VALUES" not in single and "UNION" not in single
