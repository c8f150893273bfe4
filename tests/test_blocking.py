"""The blocking guard on PostgreSQL and MariaDB: an application session waits on a row the
open chunk holds; the guard sees the wait from a second connection, halves the next chunk and
yields past BLOCKING_BUDGET, and cancels the chunk past BLOCKING_LIMIT (retried smaller), so
the application's wait stays bounded. Every row is still counted exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import close_old_connections, connection, transaction

from backfills import run_backfill
from backfills.events import Event, Yielding
from backfills.models import BackfillRun
from tests.conftest import manage
from tests.testapp.backfills import HoldLocksItems
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has no row locks to wait on"),
]

NAME = "testapp.hold_locks_items"
HOT = 150  # the application's row: in the second 100-row chunk


class Application:
    """A thread that updates one row again and again, timing each update (its waits)."""

    def __init__(self, pk: int) -> None:
        self.pk = pk
        self.waits: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                with transaction.atomic():
                    Item.objects.filter(pk=self.pk).update(note="app")
                self.waits.append(time.perf_counter() - started)
                time.sleep(0.01)
        finally:
            close_old_connections()
            connection.close()


@pytest.fixture
def app() -> Iterator[Application]:
    Item.objects.bulk_create([Item(pk=i) for i in range(1, 401)])
    application = Application(HOT)
    application.thread.start()
    try:
        yield application
    finally:
        application.stop.set()
        application.thread.join(timeout=30)


def blocking_settings(settings: Any, **values: Any) -> None:
    settings.BACKFILLS = {**settings.BACKFILLS, **values}


def test_a_wait_over_the_budget_halves_the_next_chunk_and_yields(
    settings: Any, app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocking_settings(settings, BLOCKING_BUDGET=0.1, BLOCKING_LIMIT=None)
    monkeypatch.setattr(HoldLocksItems, "hold_per_row", 0.005)  # 0.5 s per 100-row chunk
    events: list[Event] = []
    result = run_backfill(NAME, listeners=[events.append])
    assert result.run.state == "completed"
    yields = [e for e in events if isinstance(e, Yielding)]
    assert yields, "the application waited ~0.5 s on the hot row's chunk: nothing seen"
    first = yields[0]
    assert first.sessions >= 1 and 0.1 < first.max_wait < 1.0
    assert first.next_size == 50  # half of the fixed 100
    run = BackfillRun.objects.get(name=NAME)
    assert run.blocking_yields >= 1 and run.blocking_cancels == 0
    assert run.blocking_max_wait == pytest.approx(max(y.max_wait for y in yields))
    assert run.summary()["blocking"]["yields"] == run.blocking_yields
    code, out, err = manage(["backfill", "status", NAME], "tests")
    assert code == 0, err
    assert f"yielded after {run.blocking_yields} chunk" in out and "longest wait" in out
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
    # A wait is seen after it began, so never as longer than the application measured it
    # (InnoDB's copy of its lock waits, read too soon, would show the previous chunk's).
    app.stop.set()
    app.thread.join(timeout=30)
    assert run.blocking_max_wait <= max(app.waits) + 0.02, (run.blocking_max_wait, app.waits)


def test_a_wait_past_the_limit_cancels_the_chunk_and_the_wait_stays_bounded(
    settings: Any, app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocking_settings(settings, BLOCKING_BUDGET=0.1, BLOCKING_LIMIT=0.3)
    # 1.5 s of locks per 100-row chunk: without the guard the application waits that long.
    monkeypatch.setattr(HoldLocksItems, "hold_per_row", 0.015)
    result = run_backfill(NAME)
    assert result.run.state == "completed"
    run = BackfillRun.objects.get(name=NAME)
    assert run.blocking_cancels >= 1 and run.retries >= 1
    assert set(Item.objects.values_list("counter", flat=True)) == {1}  # each row once
    app.stop.set()
    app.thread.join(timeout=30)
    # The limit, plus a poll, plus the cancel's round trip: well under the 1.5 s chunk.
    assert app.waits and max(app.waits) < 0.9, max(app.waits)


def test_without_the_guard_the_application_waits_for_the_whole_chunk(
    settings: Any, app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run with the guard off: what the guard saves (and proof the test's hot row
    really is held)."""
    blocking_settings(settings, BLOCKING_BUDGET=None)
    monkeypatch.setattr(HoldLocksItems, "hold_per_row", 0.015)
    run_backfill(NAME)
    app.stop.set()
    app.thread.join(timeout=30)
    run = BackfillRun.objects.get(name=NAME)
    assert (run.blocking_yields, run.blocking_cancels) == (0, 0)
    assert max(app.waits) > 1.0, max(app.waits)


def test_the_profile_sets_the_guard_gentle_cancels_what_balanced_only_yields_to(
    settings: Any, app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.8 s of locks per chunk: under balanced (budget 0.1 s, limit 1 s) the run yields; under
    gentle (budget 0.05 s, limit 0.25 s) the guard cancels the chunk and the wait stays short."""
    blocking_settings(settings, BLOCKING_BUDGET=0.1, BLOCKING_LIMIT=1.0)
    monkeypatch.setattr(HoldLocksItems, "hold_per_row", 0.008)
    result = run_backfill(NAME, profile="gentle")
    assert result.run.state == "completed"
    run = BackfillRun.objects.get(name=NAME)
    assert run.profile == "gentle" and run.blocking_cancels >= 1
    assert set(Item.objects.values_list("counter", flat=True)) == {1}  # each row once
    app.stop.set()
    app.thread.join(timeout=30)
    # Gentle's limit, plus a poll, plus the cancel's round trip: well under the 0.8 s chunk.
    assert app.waits and max(app.waits) < 0.6, max(app.waits)
