"""Settings for the test suite: SQLite by default, DATABASE_URL for PostgreSQL or MariaDB."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ

from example_project import settings as example_settings
from example_project.db import database_from_env

TMP = Path(os.environ.get("BACKFILLS_TEST_TMP", tempfile.gettempdir()))

SECRET_KEY = "tests"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks_db",
    "backfills",
    "blog",
    "tests.testapp",
]

# The admin (tests/test_admin.py, and in a real browser tests/test_admin_browser.py).
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# The example project's middleware and templates: what an admin needs.
MIDDLEWARE = example_settings.MIDDLEWARE
TEMPLATES = example_settings.TEMPLATES

DATABASES = {"default": database_from_env(f"sqlite:///{TMP / 'backfills-tests.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not Django's in-memory test database, so that the `manage.py` processes the
    # interruption tests start see the same data. The pid keeps parallel sessions apart.
    DATABASES["default"]["TEST"] = {"NAME": str(TMP / f"backfills-test-{os.getpid()}.sqlite3")}

# A second database, for runs on several databases (`run --workers N --database default
# --database shard`): the default's name with a suffix, on the same server. Child processes
# get the default's test database in DATABASE_URL and derive the shard's test database the
# same way (test_test -> test_test_shard; SQLite: the test file's name + "-shard").
_SUFFIX = "-shard" if DATABASES["default"]["ENGINE"].endswith("sqlite3") else "_shard"
DATABASES["shard"] = {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}{_SUFFIX}"}
if "TEST" in DATABASES["default"]:
    DATABASES["shard"]["TEST"] = {"NAME": DATABASES["default"]["TEST"]["NAME"] + "-shard"}

# A replica of the default database's server (tests/test_replica_lag.py, against the servers of
# scripts/replicas.sh), only when BACKFILLS_TEST_REPLICA_URL names one. A test mirror: the test
# runner creates no database there; it reads the test database (test_test) that replication
# copies from the primary.
if os.environ.get("BACKFILLS_TEST_REPLICA_URL"):
    DATABASES["replica"] = {
        **environ.Env.db_url_config(os.environ["BACKFILLS_TEST_REPLICA_URL"]),
        "TEST": {"MIRROR": "default"},
    }

BACKFILLS = {
    # Keep retry back-off short so tests that inject transient errors stay fast.
    "RETRY_BASE_DELAY": 0.05,
    "RETRY_MAX_DELAY": 0.5,
    "CONTROL_POLL_SECONDS": 0.1,
    # Ask health checks before every chunk, so tests can count on when they run.
    "HEALTH_CHECK_SECONDS": 0,
    # The task tests run real task workers (tests/test_tasks.py): which backend the enqueuing
    # side uses, and how long one drain task works before it enqueues itself again, are set
    # by environment variables so that the worker processes agree with the test.
    "TASK_BACKEND": os.environ.get("BACKFILLS_TEST_TASK_BACKEND", "django"),
    "TASK_MAX_SECONDS": float(os.environ.get("BACKFILLS_TEST_TASK_MAX_SECONDS", "300")),
}

# Django's task framework (django.tasks on Django 6, the django-tasks backport on 5.2) with
# django-tasks-db's backend: tasks are rows in the test database, run by `db_worker`.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# Celery (tests/celery_app.py): a Redis database of its own, flushed by the tests.
CELERY_BROKER_URL = os.environ.get("BACKFILLS_TEST_CELERY_BROKER", "redis://127.0.0.1:6379/13")
CELERY_IMPORTS = ["backfills.contrib.celery"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
