from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"


def database_url() -> str:
    """A DATABASE_URL for the test database, so child processes use the same data."""
    settings = connection.settings_dict
    engine = settings["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite:///{settings['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[engine]
    user = quote(settings.get("USER") or "")
    password = quote(settings.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings.get("HOST") or "127.0.0.1"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"{scheme}://{auth}{host}{port}/{settings['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE)]),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


def start_manage(args: list[str], project: str = "example", **popen: Any) -> subprocess.Popen[str]:
    """Start `manage.py ARGS` as a real process on the test database."""
    if project == "example":
        cmd = [sys.executable, str(EXAMPLE / "manage.py"), *args]
        env = child_env()
    else:
        cmd = [sys.executable, "-m", "django", *args]
        env = child_env(DJANGO_SETTINGS_MODULE="tests.settings")
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def manage(args: list[str], project: str = "example", timeout: float = 120) -> tuple[int, str, str]:
    process = start_manage(args, project)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def wait_for(predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class LockHolder:
    """A second connection holding a lock that the backfill's next chunk needs."""

    def __init__(self, row_pk: int, table: str = "testapp_item") -> None:
        self.table = table
        self.other = connections.create_connection("default")
        self.other.ensure_connection()
        self.row_pk = row_pk
        self.held = False

    def hold(self) -> None:
        cursor = self.other.cursor()
        if self.other.vendor == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")  # the database-wide write lock
        else:
            self.other.set_autocommit(False)
            table = self.other.ops.quote_name(self.table)
            cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [self.row_pk])
        self.held = True

    def release(self) -> None:
        if self.held:
            if self.other.vendor == "sqlite":
                self.other.cursor().execute("ROLLBACK")
            else:
                self.other.rollback()
                self.other.set_autocommit(True)
            self.held = False

    def close(self) -> None:
        self.release()
        self.other.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], subprocess.Popen[str]]]:
    """start_manage(args, project="tests"), killing what still runs when the test ends."""
    processes: list[subprocess.Popen[str]] = []

    def start(args: list[str]) -> subprocess.Popen[str]:
        processes.append(start_manage(args, project="tests"))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def wait_until_killed_sessions_end() -> None:
    """Wait until no other session is connected to the test database.

    A client killed right after it sent COMMIT does not take the commit with it: its server
    session still finishes the statement and only then notices the client is gone. Until that
    session has ended the data may still change under the test. (SQLite has no server.)
    """
    if connection.vendor == "postgresql":
        sql = (
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    elif connection.vendor == "mysql":
        sql = (
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
    else:
        return

    def alone() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0] == 0

    wait_for(alone)


@pytest.fixture
def run_command() -> Callable[..., tuple[str, str]]:
    """call_command('backfill', ...) returning (stdout, stderr)."""

    def run(*args: str, **options: Any) -> tuple[str, str]:
        out, err = StringIO(), StringIO()
        call_command("backfill", *args, stdout=out, stderr=err, **options)
        return out.getvalue(), err.getvalue()

    return run


def pytest_report_header(config: pytest.Config) -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or ''} {db['NAME']}"
