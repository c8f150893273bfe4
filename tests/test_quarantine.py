"""Quarantine: failing rows are isolated by bisection and recorded; the rest commits."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.core.management import CommandError

from backfills import register
from backfills.models import BackfillRun, QuarantinedRow
from backfills.registry import registry
from tests.testapp.backfills import CountingBackfill
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.quarantine_items"


if NAME not in registry:

    @register
    class QuarantineItems(CountingBackfill):
        """Count Items, setting aside rows that fail."""

        model = "testapp.Item"
        name = NAME
        batch_size = 10
        quarantine = True


def test_failing_rows_are_quarantined_and_retried_after_the_fix(
    run_command: Callable[..., tuple[str, str]],
) -> None:
    Item.objects.bulk_create([Item() for _ in range(50)])
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    bad = [pks[3], pks[21], pks[28]]
    Item.objects.filter(pk__in=bad).update(note="boom")

    out, _ = run_command("run", NAME, "--progress", "none")

    run = BackfillRun.objects.get()
    assert (run.state, run.rows_processed, run.rows_failed) == ("completed", 47, 3)
    counters = dict(Item.objects.values_list("pk", "counter"))
    assert {pk for pk, c in counters.items() if c == 0} == set(bad)
    assert {c for pk, c in counters.items() if pk not in bad} == {1}
    quarantined = list(QuarantinedRow.objects.order_by("id"))
    assert [q.row_pk for q in quarantined] == [str(pk) for pk in bad]
    assert {q.error_class for q in quarantined} == {"builtins.ValueError"}
    assert "note is 'boom'" in quarantined[0].error_message

    out, _ = run_command("errors", NAME)
    assert f"Quarantined rows of {NAME}" in out
    assert f"{bad[1]}" in out and "builtins.ValueError: cannot process row" in out
    data = json.loads(run_command("errors", NAME, "--json")[0])
    assert [row["pk"] for row in data] == [str(pk) for pk in bad]

    # Not fixed yet: still failing, attempts counted, exit non-zero.
    with pytest.raises(CommandError, match="3 rows still failing"):
        run_command("retry-failed", NAME)
    assert {q.attempts for q in QuarantinedRow.objects.all()} == {2}

    Item.objects.filter(pk__in=bad).update(note="")
    out, _ = run_command("retry-failed", NAME)

    assert f"{NAME}: 3 quarantined rows processed, 0 still failing." in out
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
    assert not QuarantinedRow.objects.filter(resolved_at__isnull=True).exists()
    assert run_command("errors", NAME)[0].strip() == f"No quarantined rows for {NAME}."
    assert len(json.loads(run_command("errors", NAME, "--json", "--all")[0])) == 3


def test_without_quarantine_a_failing_row_fails_the_run() -> None:
    from backfills import run_backfill
    from backfills.exceptions import BackfillFailed

    Item.objects.bulk_create([Item() for _ in range(5)])
    Item.objects.filter(pk=Item.objects.order_by("pk")[2].pk).update(note="boom")
    with pytest.raises(BackfillFailed):
        run_backfill("testapp.count_items")
    assert not QuarantinedRow.objects.exists()
