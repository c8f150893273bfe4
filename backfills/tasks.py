"""Parallel runs on a job system: a task drains partitions of one run for a bounded time and
enqueues itself again while the run has work left.

``drain`` is the job-system-neutral body; ``drain_task`` wraps it for Django's task framework
(``django.tasks`` on Django 6, the ``django-tasks`` backport on 5.2) and
``backfills.contrib.celery.drain`` for Celery. A task delivered twice, or run after another
delivery already finished the work, only finds nothing to claim: claims and checkpoints live
in the database (DESIGN.md invariant 9).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from . import conf
from .engine.workers import run_worker
from .exceptions import BackfillConfigurationError
from .models import BackfillRun

logger = logging.getLogger("backfills")


def _task_decorator() -> Any:
    """``django.tasks.task`` on Django 6, the backport's on 5.2, or None."""
    for module in ("django.tasks", "django_tasks"):
        try:
            return importlib.import_module(module).task
        except ImportError:
            continue
    return None


_task = _task_decorator()


def drain(run_id: int, using: str = DEFAULT_DB_ALIAS, max_seconds: float | None = None) -> bool:
    """Walk partitions of run *run_id* for up to *max_seconds* (TASK_MAX_SECONDS); while
    other workers hold the remaining partitions, wait for them (a dead one's partition is
    taken over). Returns whether the run still has work left, for the caller to enqueue
    another drain."""
    seconds = float(max_seconds if max_seconds is not None else conf.get("TASK_MAX_SECONDS"))
    result = run_worker(
        databases=[using], run_ids=[run_id], max_seconds=seconds, exit_when_idle=True
    )
    logger.info(
        "drain of run #%s on %r: %s chunks, %s rows (%s)",
        run_id,
        using,
        result.chunks,
        result.rows,
        result.reason,
    )
    return result.work_left


def _drain_and_continue(run_id: int, using: str, max_seconds: float | None) -> dict[str, Any]:
    work_left = drain(run_id, using, max_seconds)
    if work_left:
        enqueue_django(run_id, using, max_seconds)
    return {"run": run_id, "work_left": work_left}


def drain_task(
    run_id: int, using: str = DEFAULT_DB_ALIAS, max_seconds: float | None = None
) -> dict[str, Any]:
    """Django task: drain partitions of one run, then enqueue itself if work is left."""
    return _drain_and_continue(run_id, using, max_seconds)


# The task framework stores a task by its function's dotted path and, in the worker, imports
# that path back expecting the Task: so the Task must live under the function's own name.
if _task is not None:
    drain_task = _task(drain_task)


def enqueue_django(run_id: int, using: str, max_seconds: float | None = None) -> None:
    if _task is None:
        raise BackfillConfigurationError(
            "Django's task framework is not available: use Django 6, or install the "
            "django-tasks backport on Django 5.2 (and configure TASKS)."
        )
    queue = conf.get("TASK_QUEUE")
    task: Any = drain_task
    if queue:
        task = task.using(queue_name=queue)
    task.enqueue(run_id, using, max_seconds)


def backend_problem() -> str | None:
    """Why drain tasks cannot be enqueued now (None when they can): the admin's start page
    shows the command to run instead. Django's task framework needs a ``TASKS`` backend that
    runs tasks elsewhere: its immediate backend would walk the run inside the web request,
    and its dummy backend would run nothing."""
    backend = conf.get("TASK_BACKEND")
    if backend == "celery":
        try:
            importlib.import_module("celery")
        except ImportError:
            return "BACKFILLS['TASK_BACKEND'] is 'celery' but Celery is not installed."
        return None
    if backend != "django":
        return f"BACKFILLS['TASK_BACKEND'] must be 'django' or 'celery', not {backend!r}."
    if _task is None:
        return (
            "Django's task framework is not available (Django 6, or the django-tasks backport "
            "on Django 5.2)."
        )
    from django.conf import settings

    configured = getattr(settings, "TASKS", None) or {}
    path = str(configured.get("default", {}).get("BACKEND", ""))
    if not path:
        return "No TASKS backend is configured."
    if path.rsplit(".", 1)[-1] in {"ImmediateBackend", "DummyBackend"}:
        return f"The TASKS backend {path} does not run tasks in a worker."
    return None


def enqueue_workers(run: BackfillRun, workers: int, *, using: str = DEFAULT_DB_ALIAS) -> str:
    """Enqueue *workers* drain tasks for *run* on the configured TASK_BACKEND; returns the
    backend's name for messages."""
    backend = conf.get("TASK_BACKEND")
    if backend == "celery":
        from .contrib.celery import enqueue_celery

        for _ in range(workers):
            enqueue_celery(run.pk, using)
        return "Celery"
    if backend == "django":
        for _ in range(workers):
            enqueue_django(run.pk, using)
        return "Django's task framework"
    raise BackfillConfigurationError(
        f"BACKFILLS['TASK_BACKEND'] must be 'django' or 'celery', not {backend!r}."
    )
