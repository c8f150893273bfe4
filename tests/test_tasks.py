"""Parallel runs on job systems, with real workers: django-tasks-db's `db_worker` and Celery.

Each test enqueues drain tasks for a parallel run, lets real worker processes run them (they
work for BACKFILLS_TEST_TASK_MAX_SECONDS, then enqueue themselves again while work is left)
and checks that every row was counted exactly once. SQLite has one writer, so there the runs
have one worker: the same task paths, without the concurrency.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from backfills.engine.parallel import start_parallel
from backfills.models import BackfillPartition, BackfillRun
from backfills.registry import registry
from backfills.tasks import enqueue_workers
from tests.conftest import ROOT, child_env, manage, wait_for
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "testapp.chaos_count_items"  # 50 rows a chunk, each held open ~30 ms
ROWS = 3000  # 60 chunks: at least 1.8 s of work, more than two drains' budget below
#: How long one drain task works before it enqueues itself again, in the worker processes.
DRAIN_SECONDS = "0.5"
MULTI_WRITER = connection.vendor != "sqlite"
WORKERS = 2 if MULTI_WRITER else 1
BROKER = settings.CELERY_BROKER_URL

Start = Callable[..., subprocess.Popen[str]]


def seed(rows: int = ROWS) -> None:
    Item.objects.bulk_create(Item() for _ in range(rows))


def assert_counted_once(rows: int = ROWS) -> BackfillRun:
    """Every row counted exactly once; the run completed with exact rolled-up figures."""
    assert Counter(Item.objects.values_list("counter", flat=True)) == Counter({1: rows})
    run = BackfillRun.objects.get()
    assert run.state == "completed", (run.state, run.last_error)
    assert run.rows_scanned == run.rows_processed == rows
    partitions = list(BackfillPartition.objects.filter(run=run))
    assert {p.state for p in partitions} == {"done"}
    assert sum(p.rows_scanned for p in partitions) == rows
    assert sum(p.chunks_done for p in partitions) == run.chunks_done
    return run


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a real process (`python -m ARGS`) on the test database with tests.settings;
    whatever still runs when the test ends is stopped, then killed."""
    processes: list[subprocess.Popen[str]] = []

    def run(*args: str, **env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=child_env(DJANGO_SETTINGS_MODULE="tests.settings", **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        return process

    yield run
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def finish(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """Wait for *process* to exit by itself; its output."""
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


# -- Django's task framework: django-tasks-db ---------------------------------------------------


def db_worker(start: Start, max_seconds: str = DRAIN_SECONDS) -> subprocess.Popen[str]:
    """A `db_worker` that runs the queued tasks, and those they enqueue, then exits."""
    return start(
        "django",
        "db_worker",
        "--batch",
        "--no-startup-delay",
        "--no-reload",
        "--interval",
        "0.05",
        BACKFILLS_TEST_TASK_MAX_SECONDS=max_seconds,
    )


def task_results() -> list[Any]:
    from django_tasks_db.models import DBTaskResult

    return list(DBTaskResult.objects.order_by("enqueued_at"))


def test_db_worker_drains_a_run_enqueued_by_the_command(start: Start) -> None:
    seed()
    code, out, err = manage(
        ["backfill", "run", NAME, "--workers", str(WORKERS), "--enqueue"], "tests"
    )
    assert code == 0, err
    assert f"enqueued {WORKERS} worker task" in out and "Django's task framework" in out
    assert len(task_results()) == WORKERS
    assert BackfillRun.objects.get().state == "running"

    workers = [db_worker(start) for _ in range(WORKERS)]
    for process in workers:
        finish(process)

    run = assert_counted_once()
    results = task_results()
    assert {r.status for r in results} == {"SUCCESSFUL"}, [r.traceback for r in results]
    assert {r.task_path for r in results} == {"backfills.tasks.drain_task"}
    assert all(r.args_kwargs["args"][0] == run.pk for r in results)
    # A drain ran out of its time budget with work left and enqueued itself again; the last
    # one found none.
    assert len(results) > WORKERS
    assert any(r.return_value == {"run": run.pk, "work_left": True} for r in results)
    assert results[-1].return_value == {"run": run.pk, "work_left": False}
    if MULTI_WRITER:
        assert len({p.owner_pid for p in run.partitions.all()}) == WORKERS


def test_db_worker_runs_a_duplicated_task_without_repeating_work(start: Start) -> None:
    """The queue delivers one drain twice (its row copied): both run at once, each chunk is
    still written once. On SQLite the run's one lease keeps the copy waiting."""
    from django_tasks_db.models import DBTaskResult

    seed()
    backfill_cls = registry.get(NAME)
    opened = start_parallel(backfill_cls, workers=1, max_workers=None if MULTI_WRITER else 1)
    assert enqueue_workers(opened.run, 1) == "Django's task framework"
    original = DBTaskResult.objects.get()
    duplicate = DBTaskResult.objects.get()
    duplicate.pk = None
    duplicate.id = None  # a fresh UUID: the same task, args and queue, delivered again
    duplicate.save(force_insert=True)
    assert DBTaskResult.objects.count() == 2

    # A budget longer than the whole run: each delivery would do it all by itself.
    workers = [db_worker(start, max_seconds="30") for _ in range(2)]
    for process in workers:
        finish(process)

    run = assert_counted_once()
    both = DBTaskResult.objects.filter(pk__in=[original.pk, duplicate.pk])
    assert {r.status for r in both} == {"SUCCESSFUL"}
    assert {r.return_value["work_left"] for r in both} == {False}
    first, second = sorted(both, key=lambda r: r.started_at)
    assert first.worker_ids != second.worker_ids
    # They ran at the same time: the second started before the first was done.
    assert second.started_at < first.finished_at
    assert run.rows_scanned == ROWS


# -- Celery -----------------------------------------------------------------------------------


def _redis() -> Any:
    import redis

    client = redis.Redis.from_url(BROKER, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {BROKER} (CI starts one: see .ci/run)")
    return client


@pytest.fixture
def celery_broker() -> Iterator[Any]:
    """The test Redis database, empty before and after the test."""
    client = _redis()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def celery_worker(start: Start, concurrency: int = 2) -> subprocess.Popen[str]:
    return start(
        "celery",
        "-A",
        "tests.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        BACKFILLS_TEST_TASK_BACKEND="celery",
        BACKFILLS_TEST_TASK_MAX_SECONDS=DRAIN_SECONDS,
        BACKFILLS_TEST_CELERY_BROKER=BROKER,
    )


def stop_celery(worker: subprocess.Popen[str], run: BackfillRun) -> str:
    """Wait for the run to end, then stop the worker warmly (running tasks finish)."""
    wait_for(lambda: BackfillRun.objects.get(pk=run.pk).state != "running", timeout=30)
    # Until the worker's last drain has returned its result (no enqueue after that).
    worker.send_signal(signal.SIGTERM)
    return finish(worker)


@pytest.fixture
def celery_app() -> Any:
    from tests.celery_app import app

    return app


def test_celery_worker_drains_a_parallel_run(
    start: Start, celery_broker: Any, celery_app: Any
) -> None:
    seed()
    worker = celery_worker(start)
    with override_settings(BACKFILLS={**settings.BACKFILLS, "TASK_BACKEND": "celery"}):
        opened = start_parallel(registry.get(NAME), workers=WORKERS)
        assert enqueue_workers(opened.run, WORKERS) == "Celery"
    out = stop_celery(worker, opened.run)

    run = assert_counted_once()
    received = out.count("Task backfills.drain[")
    succeeded = [line for line in out.splitlines() if "succeeded in" in line]
    assert "raised" not in out and "Traceback" not in out, out
    # Each received task appears once as received and once as succeeded.
    assert len(succeeded) == received // 2 > WORKERS, out
    # A drain ran out of its budget with work left and enqueued itself again.
    assert f"{{'run': {run.pk}, 'work_left': True}}" in out, out
    if MULTI_WRITER:
        assert len({p.owner_pid for p in run.partitions.all()}) == WORKERS


def test_celery_runs_a_task_delivered_twice_once(
    start: Start, celery_broker: Any, celery_app: Any
) -> None:
    """The same task id delivered twice at once (as after a lost acknowledgement): both
    deliveries run, concurrently, and no chunk is written twice."""
    from backfills.contrib.celery import drain

    seed()
    opened = start_parallel(registry.get(NAME), workers=1, max_workers=None if MULTI_WRITER else 1)
    # The broker holds both copies before the worker starts, so its two processes take one
    # each at once.
    for _ in range(2):
        drain.apply_async(args=(opened.run.pk, "default", 30.0), task_id="duplicated-drain")
    worker = celery_worker(start)
    out = stop_celery(worker, opened.run)

    run = assert_counted_once()
    if MULTI_WRITER:  # both deliveries walked partitions
        assert len({p.owner_pid for p in run.partitions.all()}) == 2
    assert out.count("Task backfills.drain[duplicated-drain] received") == 2, out
    assert out.count("Task backfills.drain[duplicated-drain] succeeded") == 2, out
    assert "Task backfills.drain[" not in out.replace("[duplicated-drain]", ""), out
