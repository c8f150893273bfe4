"""Each kind of backfill writes exactly what it computed, on every database."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from backfills import Outcome, run_backfill
from backfills.exceptions import BackfillConfigurationError
from backfills.models import BackfillRun
from backfills.parameters import ParameterError
from tests.testapp.kinds import WRITTEN, expected_values
from tests.testapp.models import Item, Record

pytestmark = pytest.mark.django_db(transaction=True)

Run = Callable[..., tuple[str, str]]

ORIGINAL = {"number": 5, "big": 100, "untouched": "keep me", "data": {"seed": [1, "a"]}}


def make_records(n: int = 30) -> list[int]:
    Record.objects.bulk_create([Record(**ORIGINAL) for _ in range(n)])
    return list(Record.objects.order_by("pk").values_list("pk", flat=True))


def table_checksum() -> str:
    """A digest of every column of every row, as the database returns them."""
    columns = [f.column for f in Record._meta.concrete_fields]
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Record._meta.db_table)
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        rows = cursor.fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


ROW_BACKFILLS = pytest.mark.parametrize(
    "name",
    [
        "testapp.fill_records",
        "testapp.fill_records_from_records",
        "testapp.fill_records_prefetching",
    ],
)


@ROW_BACKFILLS
def test_row_backfill_writes_every_field_type_exactly(name: str) -> None:
    pks = make_records(30)

    result = run_backfill(name)

    assert result.outcome is Outcome.COMPLETED
    assert result.run.rows_processed == 30
    for record in Record.objects.order_by("pk"):
        expected = expected_values(record.pk)
        got = {name: getattr(record, name) for name in WRITTEN}
        assert got == expected, record.pk
        assert record.untouched == "keep me" and record.done
    assert {r.pk for r in Record.objects.filter(text__isnull=True)} == {
        pk for pk in pks if pk % 5 == 0
    }
    # JSON was stored as JSON: queryable by key on every backend.
    assert Record.objects.filter(data__nested__pk=pks[1]).count() == 1


@ROW_BACKFILLS
def test_reverse_restores_the_original_data(name: str) -> None:
    make_records(20)
    before = table_checksum()
    run_backfill(name)
    assert table_checksum() != before

    result = run_backfill(name, reverse=True)

    assert result.outcome is Outcome.COMPLETED and result.run.reverse
    # The forward filled nullable columns that started NULL; the reverse nulls them again,
    # except number/big which started non-NULL: restore those two by hand and compare all.
    Record.objects.update(**{k: v for k, v in ORIGINAL.items() if k != "untouched"})
    assert table_checksum() == before
    runs = list(BackfillRun.objects.order_by("id").values_list("name", "reverse", "state"))
    assert runs == [(name, False, "completed"), (name, True, "completed")]


def test_set_based_backfill_updates_in_the_database_with_a_parameter() -> None:
    make_records(20)
    first_three = list(Record.objects.order_by("pk").values_list("pk", flat=True)[:3])
    Record.objects.filter(pk__in=first_three).update(text="x")

    result = run_backfill("testapp.bump_records", parameters={"step": 3})

    assert result.outcome is Outcome.COMPLETED
    assert set(Record.objects.values_list("number", "flag", "big", "text")) == {
        (8, True, 100, None),
        (8, True, 100, "x"),
    }
    assert result.run.parameters == {"step": 3}
    run_backfill("testapp.bump_records", reverse=True, parameters={"step": 3})
    assert set(Record.objects.values_list("number", "flag")) == {(5, False)}


def test_sql_backfill_runs_per_window_with_parameters() -> None:
    make_records(23)
    Record.objects.filter(pk=Record.objects.order_by("pk")[4].pk).update(big=None)

    result = run_backfill(
        "testapp.scale_records_sql", parameters={"factor": "10", "note": "ticket 42"}
    )

    assert result.outcome is Outcome.COMPLETED
    assert result.run.chunks_done == 4
    assert result.run.rows_processed == 22  # the NULL row did not match the statement
    assert sorted(set(Record.objects.values_list("big", flat=True)), key=str) == [1000, None]
    run_backfill("testapp.scale_records_sql", reverse=True, parameters={"factor": 10, "note": "x"})
    assert set(Record.objects.exclude(big=None).values_list("big", flat=True)) == {100}


def test_dry_run_leaves_the_table_byte_for_byte_unchanged(run_command: Run) -> None:
    make_records(40)
    before = table_checksum()

    out, _ = run_command("run", "testapp.fill_records", "--dry-run", "--batch-size", "10")

    assert table_checksum() == before
    assert not BackfillRun.objects.exists()
    assert out.startswith("Dry run of testapp.fill_records: 3 chunks, 30 rows walked, 30 ")
    assert "Everything was rolled back; no run was recorded." in out
    assert "Projected: 40 rows left to walk in about" in out
    assert "Sample of changed rows" in out and "'keep me'" not in out
    assert "Brien" in out and "日本" in out  # an after-value of the text column
    assert "Chunk query plan:" in out


def test_parameters_are_validated_and_stored(run_command: Run) -> None:
    make_records(3)
    for args, message in [
        (["--param", "factor=2"], "needs --param note=<str> (why this runs)"),
        (["--param", "note=x", "--param", "factor=7"], "must be one of: 2, 3, 10"),
        (["--param", "note=x", "--param", "factor=two"], "is not a valid int"),
        (["--param", "note=x", "--param", "colour=red"], "Unknown parameter(s)"),
        (["--param", "note"], "--param expects key=value"),
    ]:
        with pytest.raises(CommandError, match=re.escape(message)):
            run_command("run", "testapp.scale_records_sql", *args)
    assert not BackfillRun.objects.exists()

    run_command("run", "testapp.scale_records_sql", "--param", "note=go", "--max-chunks", "1")
    (data,) = __import__("json").loads(run_command("status", "--json")[0])
    assert data["parameters"] == {"factor": 2, "note": "go"}
    with pytest.raises(CommandError, match="was started with parameters factor=2, note=go"):
        run_command("run", "testapp.scale_records_sql", "--param", "note=other")
    run_command("run", "testapp.scale_records_sql")  # resumes with its stored parameters
    assert set(Record.objects.values_list("big", flat=True)) == {200}


def test_reverse_of_a_backfill_without_one_is_refused() -> None:
    with pytest.raises(BackfillConfigurationError, match="defines no reverse"):
        run_backfill("testapp.count_items", reverse=True)
    with pytest.raises(ParameterError):
        run_backfill("testapp.bump_records", parameters={"step": "many"})


def test_require_backfill_stops_migrate_until_the_backfill_completed() -> None:
    call_command("migrate", "testapp", "0002", verbosity=0)
    make_records(5)
    with pytest.raises(CommandError) as excinfo:
        call_command("migrate", "testapp", verbosity=0)
    message = str(excinfo.value)
    assert "needs backfill testapp.fill_records to have completed" in message
    assert "python manage.py backfill run testapp.fill_records" in message

    run_backfill("testapp.fill_records")
    call_command("migrate", "testapp", verbosity=0)  # passes now
    from django.db.migrations.recorder import MigrationRecorder

    applied = MigrationRecorder(connection).applied_migrations()
    assert ("testapp", "0003_require_fill_records") in applied


def test_verify_reports_remaining_rows(run_command: Run) -> None:
    make_records(10)
    with pytest.raises(CommandError, match="10 row\\(s\\) still need work"):
        run_command("verify", "testapp.fill_records")
    run_backfill("testapp.fill_records")
    out, _ = run_command("verify", "testapp.fill_records")
    assert "rows still matching get_queryset(): 0" in out and "post_check: ok" in out


def test_items_are_untouched_by_record_backfills() -> None:
    Item.objects.bulk_create([Item() for _ in range(3)])
    make_records(3)
    run_backfill("testapp.fill_records")
    assert set(Item.objects.values_list("counter", "note")) == {(0, "")}


def test_status_shows_parameters(run_command: Run) -> None:
    make_records(3)
    run_command(
        "run", "testapp.scale_records_sql", "--param", "note=ticket 42", "--progress", "none"
    )
    out, _ = run_command("status", "testapp.scale_records_sql")
    assert "testapp.scale_records_sql: parameters factor=2, note=ticket 42" in out


def test_system_check_warns_about_backfills_that_can_run_but_never_completed() -> None:
    from backfills.checks import check_pending_backfills

    def warned() -> set[str]:
        return {
            m.obj.name
            for m in check_pending_backfills(databases=["default"])
            if m.id == "backfills.W001"
        }

    # blog.populate_post_slugs requires blog.0002 (applied in the test database) and never ran.
    assert "blog.populate_post_slugs" in warned()
    # testapp.needs_future_migration requires a migration that does not exist: not yet runnable.
    assert "testapp.needs_future_migration" not in warned()
    run_backfill("blog.populate_post_slugs")
    assert "blog.populate_post_slugs" not in warned()


def test_read_fields_naming_an_unknown_or_non_column_field_is_a_clear_error() -> None:
    from tests.testapp.kinds import FillRecordsFromRecords

    class Typo(FillRecordsFromRecords):
        name = "testapp.typo"
        read_fields = ["untuched"]

    with pytest.raises(BackfillConfigurationError, match="has no field 'untuched'"):
        Typo.row_attnames(["text"])
    assert FillRecordsFromRecords.row_attnames(["text", "data"]) == [
        "id",
        "untouched",
        "data",
        "text",
    ]


def test_set_based_kinds_default_to_a_shorter_target_chunk_time(settings: Any) -> None:
    make_records(10)
    targets = {}
    for name in ("testapp.bump_records", "testapp.scale_records_sql", "testapp.fill_records"):
        params = {"note": "test"} if name == "testapp.scale_records_sql" else {}
        targets[name] = run_backfill(name, parameters=params).run.target_chunk_time
    # One statement per chunk holds its row locks from start to commit: 0.2 s, not 0.5 s.
    assert targets == {
        "testapp.bump_records": 0.2,
        "testapp.scale_records_sql": 0.2,
        "testapp.fill_records": 0.5,
    }
    settings.BACKFILLS = {**settings.BACKFILLS, "SET_BASED_TARGET_CHUNK_TIME": 0.3}
    result = run_backfill("testapp.bump_records", restart=True)
    assert result.run.target_chunk_time == 0.3


def test_a_record_missing_what_transform_reads_fails_the_run_instead_of_quarantining() -> None:
    from backfills import RowBackfill
    from backfills.exceptions import BackfillFailed
    from backfills.models import QuarantinedRow

    class ReadsTooMuch(RowBackfill):
        name = "testapp.reads_too_much"
        model = "testapp.Record"
        fields = ["text"]
        read_fields = ["untouched"]
        quarantine = True  # every row would fail alike: quarantining them all would hide it

        def transform(self, row: Any) -> None:
            row.text = row.body  # body is not in read_fields

    make_records(5)
    with pytest.raises(BackfillFailed, match="transform used 'body'.*add it to read_fields"):
        run_backfill(ReadsTooMuch)
    assert not QuarantinedRow.objects.exists()
    assert not Record.objects.filter(text__isnull=False).exists()


def test_target_chunk_time_precedence(settings: Any) -> None:
    from backfills import conf
    from backfills.engine.options import RunOptions, new_run_settings
    from tests.testapp.kinds import BumpRecords, FillRecords

    def target(cls: Any, **options: Any) -> float:
        settings = conf.snapshot()
        return new_run_settings(cls, RunOptions(**options), settings).target_chunk_time or 0

    assert (target(FillRecords), target(BumpRecords)) == (0.5, 0.2)
    # The set-based cap never lengthens a shorter TARGET_CHUNK_TIME.
    settings.BACKFILLS = {**settings.BACKFILLS, "TARGET_CHUNK_TIME": 0.1}
    assert (target(FillRecords), target(BumpRecords)) == (0.1, 0.1)

    class Slow(BumpRecords):
        target_chunk_time = 0.7

    assert target(Slow) == 0.7  # the class attribute beats the settings
    assert target(Slow, target_chunk_time=0.3) == 0.3  # and --target-chunk-time beats both
