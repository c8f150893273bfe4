"""Settings for the django-backfills example project.

SQLite by default; set DATABASE_URL (postgres://..., mysql://...) to use another database.
"""

from __future__ import annotations

from pathlib import Path

from example_project.db import database_from_env

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "backfills",
    "blog",
]

DATABASES = {"default": database_from_env(f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "example_project.urls"
USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Progress is shown by the command; the log carries warnings (retries) and errors.
    "loggers": {"backfills": {"handlers": ["console"], "level": "WARNING"}},
}
