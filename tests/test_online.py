"""Online safety on a real database: adaptive chunk sizes, throttling, live settings."""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from backfills import Outcome, register, run_backfill
from backfills.events import ChunkCommitted, Event, Retrying, ThrottleCleared, Throttled
from backfills.models import BackfillRun
from backfills.registry import registry
from tests.conftest import LockHolder, manage, start_manage, wait_for
from tests.testapp.backfills import CountingBackfill
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


class CostlyItems(CountingBackfill):
    """Fixed cost per row (1 ms), and 0.6 s more for a chunk holding a row noted "slow"."""

    model = "testapp.Item"
    row_delay = 0.001

    def process_chunk(self, rows: list[Any]) -> None:
        super().process_chunk(rows)
        if any(row.note == "slow" for row in rows):
            time.sleep(0.6)


for name in ("testapp.costly_items",):
    if name not in registry:
        register(type("CostlyItemsRegistered", (CostlyItems,), {"name": name}))


def sizes_of(events: list[Event]) -> list[int]:
    return [e.window_size for e in events if isinstance(e, ChunkCommitted)]


def test_adaptive_size_grows_from_a_small_start_settles_near_the_target_and_shrinks(
    settings: Any,
) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, "INITIAL_BATCH_SIZE": 10, "MIN_BATCH_SIZE": 5}
    Item.objects.bulk_create([Item() for _ in range(4000)])
    slow_pk = Item.objects.order_by("pk").values_list("pk", flat=True)[3000]
    Item.objects.filter(pk=slow_pk).update(note="slow")
    events: list[Event] = []

    result = run_backfill("testapp.costly_items", target_chunk_time=0.1, listeners=[events.append])

    assert result.outcome is Outcome.COMPLETED
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
    chunks = [e for e in events if isinstance(e, ChunkCommitted)]
    sizes = sizes_of(events)
    assert sizes[0] == 10
    # Growth is bounded and monotonic from the small start: doubling while a chunk takes under
    # half the target (slow start), 20% a step after (+1 for rounding).
    started = next(i for i, c in enumerate(chunks) if c.seconds >= 0.05)
    assert all(b <= a * 2 + 1 for a, b in zip(sizes[:started], sizes[1:], strict=False))
    after = sizes[started : started + 12]
    assert all(b <= a * 1.2 + 1 for a, b in zip(after, after[1:], strict=False)), after
    assert all(b >= a for a, b in zip(sizes[:started], sizes[1:started], strict=False))
    # 1 ms a row and a 0.1 s target: about 100 rows a chunk once settled (the database's own
    # time per row pulls it a little lower).
    settled = [c.window_size for c in chunks[25:] if c.seconds < 0.3][:15]
    assert 50 <= statistics.median(settled) <= 110, settled
    # The chunk holding the slow row ran long; the next one is at most half its size.
    slow_index = next(i for i, c in enumerate(chunks) if c.seconds > 0.5)
    assert sizes[slow_index + 1] <= sizes[slow_index] / 2, sizes[slow_index - 2 : slow_index + 3]


@pytest.mark.skipif("connection.vendor == 'sqlite'")
def test_a_window_that_keeps_timing_out_is_split_in_half() -> None:
    Item.objects.bulk_create([Item() for _ in range(64)])
    pks = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    holder = LockHolder(pks[10])  # in the first half, so every split still contains it
    holder.hold()
    retries: list[Retrying] = []

    def release_after_three(event: Event) -> None:
        if isinstance(event, Retrying):
            retries.append(event)
            if len(retries) == 3:
                holder.release()

    try:
        result = run_backfill("testapp.count_items", batch_size=64, listeners=[release_after_three])
    finally:
        holder.close()

    assert result.outcome is Outcome.COMPLETED
    # First timeout: retried whole; from the second on, each retry takes half the window.
    assert [r.next_size for r in retries] == [64, 32, 16]
    # Once through, the fixed size comes back.
    assert BackfillRun.objects.get().last_chunk_size == 64 - 16
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


def test_custom_health_check_throttles_then_clears(settings: Any) -> None:
    calls: list[int] = []

    def busy_three_times(backfill: Any) -> str | None:
        calls.append(1)
        return "queue depth 1,234 > 1,000" if 3 <= len(calls) <= 5 else None

    settings.BACKFILLS = {**settings.BACKFILLS, "HEALTH_CHECKS": [busy_three_times]}
    Item.objects.bulk_create([Item() for _ in range(50)])
    events: list[Event] = []

    result = run_backfill("testapp.count_items", listeners=[events.append])

    assert result.outcome is Outcome.COMPLETED
    throttled = [e for e in events if isinstance(e, Throttled)]
    assert {e.reason for e in throttled} == {"queue depth 1,234 > 1,000"}
    assert [e.wait for e in throttled] == [0.25, 0.5, 1.0]
    cleared = [e for e in events if isinstance(e, ThrottleCleared)]
    assert len(cleared) == 1 and cleared[0].waited >= 1.7
    run = BackfillRun.objects.get()
    assert run.time_throttled >= 1.7
    assert run.time_running < 1.5  # throttled time is not working time: rate and ETA stay true
    assert run.throttle_reason == ""
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


@pytest.mark.parametrize(("interval", "expected_calls"), [(0, 6), (3600, 1)])
def test_health_checks_are_asked_at_most_once_per_interval(
    settings: Any, interval: float, expected_calls: int
) -> None:
    calls: list[int] = []
    settings.BACKFILLS = {
        **settings.BACKFILLS,
        "HEALTH_CHECKS": [lambda backfill: calls.append(1)],
        "HEALTH_CHECK_SECONDS": interval,
    }
    Item.objects.bulk_create([Item() for _ in range(50)])  # 5 chunks of 10, then an empty one

    result = run_backfill("testapp.count_items")

    assert result.outcome is Outcome.COMPLETED
    assert len(calls) == expected_calls
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


def test_critical_health_pauses_the_run_with_exit_status_75(settings: Any) -> None:
    from backfills.throttle import Health

    settings.BACKFILLS = {
        **settings.BACKFILLS,
        "HEALTH_CHECKS": [lambda backfill: Health.critical("replica 9s behind")],
    }
    Item.objects.bulk_create([Item() for _ in range(5)])
    with pytest.raises(SystemExit) as excinfo:
        from django.core.management import call_command

        call_command("backfill", "run", "testapp.count_items", "--progress", "none")
    assert excinfo.value.code == 75
    run = BackfillRun.objects.get()
    assert (run.state, run.status_reason) == ("paused", "critical: replica 9s behind")
    assert set(Item.objects.values_list("counter", flat=True)) == {0}


def status_json() -> dict[str, Any]:
    code, out, err = manage(["backfill", "status", "--json"], project="tests")
    assert code == 0, err
    (data,) = json.loads(out)
    return data


def test_pause_file_throttles_a_running_process_until_removed(tmp_path: Path) -> None:
    Item.objects.bulk_create([Item() for _ in range(2000)])
    pause = tmp_path / "pause"
    process = start_manage(
        [
            "backfill",
            "run",
            "testapp.slow_count_items",  # about 40 ms a chunk of 20: 4 s in all
            "--pause-file",
            str(pause),
            "--progress-interval",
            "0",
        ],
        project="tests",
    )
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=3).exists())
    pause.touch()
    wait_for(lambda: BackfillRun.objects.exclude(throttle_reason="").exists())
    first = status_json()
    time.sleep(1.0)
    second = status_json()

    assert first["throttled"] == f"pause file {pause} exists"
    assert second["throttled"] == first["throttled"]
    assert second["rows_scanned"] == first["rows_scanned"] < 2000  # rows stopped advancing
    assert second["state"] == "running"

    pause.unlink()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"throttled: pause file {pause} exists" in out
    assert "unthrottled after" in out
    data = status_json()
    assert data["state"] == "completed" and data["throttled"] is None
    assert data["time_throttled"] >= 1.0
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


def test_backfill_set_changes_the_batch_size_of_a_running_process() -> None:
    # 12 s of work at 2 ms a row: the `set` process must land while the run still runs, and
    # on a loaded 2-core machine its start-up alone took longer than the 6 s of 3000 rows.
    Item.objects.bulk_create([Item() for _ in range(6000)])
    process = start_manage(
        ["backfill", "run", "testapp.slow_count_items", "--progress-interval", "0"],
        project="tests",
    )
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=2).exists())
    code, out, err = manage(
        ["backfill", "set", "testapp.slow_count_items", "--batch-size", "150"], project="tests"
    )
    assert code == 0, err
    assert "batch_size=150 (the running process applies it at its next chunk boundary)" in out
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    assert "settings changed by `backfill set`: batch_size=150" in out, out
    run = BackfillRun.objects.get()
    assert run.state == "completed" and run.batch_size == 150
    sizes = [int(m) for m in re.findall(r"chunk (\d+) rows in", out)]
    # Chunks of 20 (the class's size) until the change, then chunks of 150.
    changed = sizes.index(150)
    assert changed >= 2 and set(sizes[:changed]) == {20}, sizes
    assert set(sizes[changed:]) <= {150, sizes[-1]}, sizes  # the last chunk holds what is left
    assert set(Item.objects.values_list("counter", flat=True)) == {1}


@pytest.mark.skipif("connection.vendor == 'sqlite'")
def test_large_tables_use_statistics_for_the_total(settings: Any) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, "ESTIMATE_ABOVE": 100}
    Item.objects.bulk_create([Item() for _ in range(500)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"ANALYZE {'' if connection.vendor == 'postgresql' else 'TABLE '}"
            f"{connection.ops.quote_name(Item._meta.db_table)}"
        )
    events: list[Event] = []
    run_backfill("testapp.count_items", max_chunks=1, listeners=[events.append])
    run = BackfillRun.objects.get()
    assert run.rows_total_exact is False
    assert 250 <= run.rows_total <= 1000  # statistics, not a count
    run_backfill("testapp.count_items")
    run.refresh_from_db()
    assert (run.rows_total, run.rows_total_exact) == (500, True)
