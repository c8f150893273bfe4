"""The Celery app of the test suite: `celery -A tests.celery_app worker` runs backfill drains.

Set up the way Django projects do (Celery's "First steps with Django"): settings from the
``CELERY_`` names in ``tests/settings.py`` (the Redis broker), and the backfills task module
imported explicitly, since it is not an app's ``tasks.py`` that autodiscovery would find.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
