"""RequireBackfill lets `migrate` through only when the backfill's data is done: its latest run,
in either direction, is a completed forward run (or no row needs work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from backfills import Outcome, run_backfill
from backfills.models import BackfillRun
from backfills.operations import BackfillNotCompleted, RequireBackfill
from backfills.parameters import Parameter
from backfills.registry import registry
from tests.conftest import manage
from tests.testapp.kinds import FillRecords
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = "needs backfill testapp.fill_records to have completed"


def make_records(n: int) -> list[int]:
    Record.objects.bulk_create([Record() for _ in range(n)])
    return list(Record.objects.order_by("pk").values_list("pk", flat=True))


@pytest.fixture
def before_guard() -> Iterator[None]:
    """testapp migrated back to just before 0003 (RequireBackfill("testapp.fill_records")),
    and forward again at the end, whatever the test left."""
    call_command("migrate", "testapp", "0002", verbosity=0)
    yield
    Record.objects.all().delete()  # no row needs work: the guard lets migrate through
    call_command("migrate", "testapp", verbosity=0)


def migrate_refused() -> str:
    with pytest.raises(CommandError) as excinfo:
        call_command("migrate", "testapp", verbosity=0)
    return str(excinfo.value)


def test_a_reverse_run_after_the_completed_one_stops_migrate(before_guard: None) -> None:
    make_records(10)
    assert run_backfill("testapp.fill_records").outcome is Outcome.COMPLETED
    assert run_backfill("testapp.fill_records", reverse=True).outcome is Outcome.COMPLETED
    assert Record.objects.filter(done=False).count() == 10  # the data is reversed

    message = migrate_refused()
    assert REFUSED in message and "is reversed" in message
    assert "python manage.py backfill run testapp.fill_records" in message

    # From the command line: the guard's message and exit status 1, not a traceback.
    code, out, err = manage(["migrate", "testapp"], project="tests")
    assert code == 1, (out, err)
    assert REFUSED in err and "Traceback" not in err

    assert run_backfill("testapp.fill_records", restart=True).outcome is Outcome.COMPLETED
    call_command("migrate", "testapp", verbosity=0)  # done again: passes


def test_a_restart_run_left_paused_after_a_completed_one_stops_migrate(
    before_guard: None,
) -> None:
    make_records(5)
    assert run_backfill("testapp.fill_records").outcome is Outcome.COMPLETED
    make_records(20)  # new rows the completed run never saw
    paused = run_backfill("testapp.fill_records", restart=True, max_chunks=1)
    assert paused.outcome is not Outcome.COMPLETED
    assert BackfillRun.objects.filter(state=BackfillRun.State.COMPLETED).count() == 1

    message = migrate_refused()
    assert REFUSED in message and f"latest run #{paused.run.pk} is paused" in message

    assert run_backfill("testapp.fill_records").outcome is Outcome.COMPLETED  # resumes it
    call_command("migrate", "testapp", verbosity=0)


def test_a_run_cancelled_before_its_first_chunk_does_not_undo_a_completed_one(
    before_guard: None,
) -> None:
    make_records(5)
    assert run_backfill("testapp.fill_records").outcome is Outcome.COMPLETED
    make_records(3)  # rows need work again, so only the run table can let migrate through
    BackfillRun.objects.create(
        name="testapp.fill_records", state=BackfillRun.State.CANCELLED, chunks_done=0
    )
    call_command("migrate", "testapp", verbosity=0)


def test_before_the_backfills_tables_exist_the_guard_still_answers(before_guard: None) -> None:
    make_records(3)
    call_command("migrate", "backfills", "zero", verbosity=0)
    try:
        assert REFUSED in migrate_refused()  # no run table: not done, and said so plainly
        Record.objects.all().delete()
        # Nothing to do: passes. On PostgreSQL the failed read of the run table happened inside
        # migrate's transaction; the savepoint keeps that transaction usable.
        call_command("migrate", "testapp", verbosity=0)
    finally:
        call_command("migrate", "backfills", verbosity=0)


# -- the backfill the guard asks is built with its parameters --------------------------------


def guard(name: str) -> None:
    """What `migrate` does with RequireBackfill(name): inside the migration's transaction."""
    with connection.schema_editor(atomic=True) as editor:
        RequireBackfill(name).database_forwards("testapp", editor, None, None)


def test_the_guard_asks_the_queryset_with_the_latest_runs_parameters() -> None:
    pks = make_records(20)
    middle = pks[9]
    # A run over the records above the middle one, stopped after its first chunk ...
    run = run_backfill(
        "testapp.fill_records_above", parameters={"above": middle}, batch_size=5, max_chunks=1
    )
    assert run.outcome is not Outcome.COMPLETED
    # ... whose remaining rows someone else filled: with its parameters, nothing is left to do
    # (the records at or below the middle one never were its work).
    Record.objects.filter(pk__gt=middle).update(done=True)

    guard("testapp.fill_records_above")  # no AttributeError on self.params.above, no refusal


def test_a_required_parameter_without_a_run_means_cannot_tell_not_a_crash() -> None:
    make_records(3)
    with pytest.raises(BackfillNotCompleted, match="fill_records_above to have completed"):
        guard("testapp.fill_records_above")


def test_without_a_run_the_declared_defaults_are_used() -> None:
    class FillRecordsAboveDefault(FillRecords):
        name = "testapp.fill_records_above_default"
        parameters = {"above": Parameter(int, default=0)}

        def get_queryset(self) -> Any:
            return super().get_queryset().filter(pk__gt=self.params.above)

    registry.register(FillRecordsAboveDefault)
    try:
        guard("testapp.fill_records_above_default")  # no row at all: nothing to do
        make_records(2)
        with pytest.raises(BackfillNotCompleted):
            guard("testapp.fill_records_above_default")
    finally:
        registry.unregister("testapp.fill_records_above_default")
