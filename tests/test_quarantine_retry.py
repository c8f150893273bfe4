"""`retry-failed` processes quarantined rows again with the parameters of the forward run that
set them aside, whatever ran after it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backfills import Outcome, run_backfill
from backfills.models import BackfillRun, QuarantinedRow
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.quarantine_step_items"  # counter += step; the reverse: counter -= step


def test_retry_failed_uses_the_forward_runs_parameters_after_a_reverse_run(
    run_command: Callable[..., tuple[str, str]],
) -> None:
    Item.objects.bulk_create([Item() for _ in range(20)])
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    bad = [pks[4], pks[13]]
    Item.objects.filter(pk__in=bad).update(note="boom")

    forward = run_backfill(NAME, parameters={"step": 5})
    assert forward.outcome is Outcome.COMPLETED and forward.run.rows_failed == 2
    assert sorted(QuarantinedRow.objects.values_list("row_pk", flat=True)) == sorted(
        str(pk) for pk in bad
    )
    # A later reverse run with other parameters: the latest run of the name, not the one the
    # quarantined rows belong to.
    backward = run_backfill(NAME, reverse=True, parameters={"step": 2})
    assert backward.outcome is Outcome.COMPLETED and backward.run.rows_failed == 0
    latest = BackfillRun.objects.latest("id")
    assert (latest.reverse, latest.parameters) == (True, {"step": 2})

    Item.objects.filter(pk__in=bad).update(note="")  # the cause is fixed
    out, _ = run_command("retry-failed", NAME)

    assert "0 still failing" in out, out
    counters = dict(Item.objects.values_list("pk", "counter"))
    assert {counters[pk] for pk in bad} == {5}  # the forward run's step, not the reverse's 2
    assert {c for pk, c in counters.items() if pk not in bad} == {3}  # 5, then 2 taken off
