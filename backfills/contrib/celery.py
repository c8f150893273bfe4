"""Celery entry point for parallel runs: ``backfills.contrib.celery.drain``.

Needs Celery with its app set up as usual for Django. ``app.autodiscover_tasks()`` imports each
installed app's ``tasks`` module, which for backfills is the Django-task one, not this: name this
module in the app's ``imports`` (``CELERY_IMPORTS = ["backfills.contrib.celery"]`` with
``app.config_from_object("django.conf:settings", namespace="CELERY")``) or import it in your
celery module. The process that enqueues (``backfill run --enqueue``) must have loaded that app
too, as Django projects do by importing it in the project package's ``__init__``; else the task
is sent to Celery's default broker.

The task acknowledges late and is redelivered if its worker dies: a redelivery finds the
partition its predecessor held and takes it over once the lease allows. (On Redis and SQS a
message is redelivered only after the transport's ``visibility_timeout``, an hour by default;
drains of the run still going take the dead worker's partition over sooner.)
"""

from __future__ import annotations

from typing import Any

from celery import shared_task  # type: ignore[import-untyped]
from django.db import DEFAULT_DB_ALIAS

from .. import conf
from ..tasks import drain as drain_partitions


@shared_task(name="backfills.drain", acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def drain(
    run_id: int, using: str = DEFAULT_DB_ALIAS, max_seconds: float | None = None
) -> dict[str, Any]:
    """Drain partitions of one run for a bounded time, then enqueue itself if work is left."""
    work_left = drain_partitions(run_id, using, max_seconds)
    if work_left:
        enqueue_celery(run_id, using, max_seconds)
    return {"run": run_id, "work_left": work_left}


def enqueue_celery(run_id: int, using: str, max_seconds: float | None = None) -> None:
    queue = conf.get("TASK_QUEUE")
    options: dict[str, Any] = {"queue": queue} if queue else {}
    drain.apply_async(args=(run_id, using, max_seconds), **options)
