"""backfills.W001 follows the backfill's latest run and the migrations this app ships."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from backfills import Outcome, run_backfill
from backfills.checks import check_pending_backfills
from blog.models import Post

METADATA = "blog.build_post_metadata"  # reversible; requires blog.0003, applied in the tests


def warnings() -> dict[str, str]:
    return {
        message.obj.name: message.msg
        for message in check_pending_backfills(databases=["default"])
        if message.id == "backfills.W001"
    }


@pytest.mark.django_db(transaction=True)
def test_w001_warns_when_the_latest_run_is_a_completed_reverse() -> None:
    Post.objects.bulk_create([Post(title=f"post {i}", seo_title="t") for i in range(5)])
    assert "has never completed there" in warnings()[METADATA]

    assert run_backfill(METADATA).outcome is Outcome.COMPLETED
    assert METADATA not in warnings()

    reversed_run = run_backfill(METADATA, reverse=True)
    assert reversed_run.outcome is Outcome.COMPLETED
    assert f"its latest run #{reversed_run.run.pk} is reversed" in warnings()[METADATA]

    assert run_backfill(METADATA, restart=True).outcome is Outcome.COMPLETED
    assert METADATA not in warnings()


@pytest.mark.django_db(transaction=True)
def test_w001_warns_when_a_restart_run_is_left_paused() -> None:
    Post.objects.bulk_create([Post(title=f"post {i}") for i in range(5)])
    assert run_backfill(METADATA).outcome is Outcome.COMPLETED
    Post.objects.bulk_create([Post(title=f"new post {i}") for i in range(30)])

    paused = run_backfill(METADATA, restart=True, batch_size=5, max_chunks=1)
    assert paused.outcome is not Outcome.COMPLETED
    assert f"its latest run #{paused.run.pk} is paused" in warnings()[METADATA]


@pytest.fixture
def one_more_shipped_migration(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """The backfills app as a later release ships it: 0001_initial and a 0002 on disk."""
    package = tmp_path / "next_backfills_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_initial.py").write_text(
        "import importlib\n\n"
        'Migration = importlib.import_module("backfills.migrations.0001_initial").Migration\n'
    )
    (package / "0002_next.py").write_text(
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n"
        '    dependencies = [("backfills", "0001_initial")]\n'
        "    operations = []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.MIGRATION_MODULES = {"backfills": "next_backfills_migrations"}
    clear_cached_migration_list()
    yield ("backfills", "0002_next")
    clear_cached_migration_list()


def clear_cached_migration_list() -> None:
    from backfills.engine.preconditions import own_migrations

    own_migrations.cache_clear()


@pytest.mark.django_db
def test_w001_waits_for_every_migration_the_app_ships(
    one_more_shipped_migration: tuple[str, str],
) -> None:
    # blog.populate_post_slugs requires blog.0002 (applied) and never ran; but the run table is
    # older than this code (0002_next is not applied), so there is nothing to read yet.
    assert "blog.populate_post_slugs" not in warnings()

    MigrationRecorder(connection).record_applied(*one_more_shipped_migration)
    assert "blog.populate_post_slugs" in warnings()  # rolled back with the test's transaction


def test_an_unknown_task_backend_is_an_error_and_a_missing_one_a_warning(settings: Any) -> None:
    from backfills.checks import check_task_backend

    settings.BACKFILLS = {**settings.BACKFILLS, "TASK_BACKEND": "rq"}
    (error,) = check_task_backend()
    assert error.id == "backfills.E004" and "'rq'" in error.msg
    settings.BACKFILLS = {**settings.BACKFILLS, "TASK_BACKEND": "celery"}
    assert check_task_backend() == []  # installed with the test extras
