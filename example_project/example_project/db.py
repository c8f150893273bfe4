"""DATABASES from the DATABASE_URL environment variable (django-environ), SQLite by default."""

from __future__ import annotations

import os
from typing import Any

import environ


def database_from_env(default_url: str) -> dict[str, Any]:
    """Parse DATABASE_URL, with settings that suit long-running chunked writers."""
    # An empty DATABASE_URL counts as unset, so `DATABASE_URL= make test` means SQLite.
    url = os.environ.get("DATABASE_URL") or default_url
    config: dict[str, Any] = environ.Env.db_url_config(url)
    options = config.setdefault("OPTIONS", {})
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy
        # timeout instead of one failing at once when it upgrades from a read lock; WAL lets
        # readers (status, the app) read while a chunk writes.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", 20)
        options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    elif config["ENGINE"] == "django.db.backends.mysql":
        options.setdefault("charset", "utf8mb4")
    return config
