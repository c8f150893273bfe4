"""`manage.py backfill ...`: output asserted as text and JSON, user errors as CommandError."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.core.management import CommandError

from backfills.models import BackfillRun
from tests.conftest import manage
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

Run = Callable[..., tuple[str, str]]


def test_list_shows_each_backfill_with_description_and_latest_state(run_command: Run) -> None:
    Item.objects.bulk_create([Item() for _ in range(5)])
    run_command("run", "testapp.count_items", "--progress", "none")

    out, _ = run_command("list")

    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert "Registered backfills" in out
    assert "blog.Post" in lines["blog.populate_post_slugs"]
    assert "never run" in lines["blog.populate_post_slugs"]
    assert "Count each Item once." in lines["testapp.count_items"]
    assert "completed" in lines["testapp.count_items"]


def test_run_prints_plain_progress_without_control_characters(run_command: Run) -> None:
    Item.objects.bulk_create([Item() for _ in range(25)])

    out, _ = run_command("run", "testapp.count_items", "--progress-interval", "0")

    assert "\x1b" not in out and "\r" not in out
    lines = out.splitlines()
    assert lines[0].startswith("Started run #") and "25 rows up to pk" in lines[0]
    assert lines[1].startswith("testapp.count_items: 10/25 rows (40.0%) | 10 processed |")
    assert "chunk 10 rows in" in lines[1]
    assert lines[-1].startswith("Completed run #") and "25 rows walked, 25 processed" in lines[-1]
    assert "in 3 chunks" in lines[-1]


def test_run_again_after_a_partial_run_says_it_resumes(run_command: Run) -> None:
    Item.objects.bulk_create([Item() for _ in range(30)])
    out, _ = run_command("run", "testapp.count_items", "--max-chunks", "1")
    assert "Paused run" in out and "--max-chunks 1" in out

    out, _ = run_command("run", "testapp.count_items")

    assert "from its checkpoint: 10 of 30 rows already done" in out
    assert set(Item.objects.values_list("counter", flat=True)) == {1}
    out, _ = run_command("run", "testapp.count_items")
    assert "already completed" in out and "--restart" in out


def test_status_table_and_json(run_command: Run) -> None:
    Item.objects.bulk_create([Item() for _ in range(40)])
    run_command("run", "testapp.count_items", "--max-chunks", "3", "--progress", "none")

    out, _ = run_command("status")
    row = next(line for line in out.splitlines() if "testapp.count_items" in line and "│" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:6] == [
        "testapp.count_items",
        f"#{BackfillRun.objects.get().pk}",
        "paused",
        "75.0%",
        "30/40",
        "30",
    ]
    assert cells[6].endswith("rows/s")

    out, _ = run_command("status", "testapp.count_items", "--json")
    (data,) = json.loads(out)
    assert data["name"] == "testapp.count_items"
    assert data["state"] == "paused"
    assert (data["rows_scanned"], data["rows_total"], data["chunks"]) == (30, 40, 3)
    assert data["percent"] == 75.0
    assert data["status_reason"] == "partial run: stopped after --max-chunks 3"
    assert data["error"] is None


def test_status_shows_the_first_line_of_the_last_error(run_command: Run) -> None:
    Item.objects.bulk_create([Item(note="boom")])
    with pytest.raises(CommandError, match="failed in chunk 1"):
        run_command("run", "testapp.count_items", "--progress", "none")

    out, _ = run_command("status", "testapp.count_items")
    assert "failed" in out and "builtins.ValueError: cannot process row" in out
    (data,) = json.loads(run_command("status", "--json")[0])
    assert data["error"]["class"] == "builtins.ValueError"


def test_status_with_no_runs(run_command: Run) -> None:
    assert run_command("status")[0].strip() == "No runs recorded."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "testapp.count_itemz"], "Did you mean: testapp.count_items"),
        (["run", "testapp.count_items", "--batch-size", "0"], "must be at least 1"),
        (["run", "testapp.count_items", "--batch-size", "ten"], "expected a whole number"),
        (["run", "testapp.count_items", "--sleep", "-1"], "finite number of seconds >= 0"),
        (["run", "testapp.count_items", "--sleep", "nan"], "finite number of seconds >= 0"),
        # One rule and one message for every number of seconds (bug 10).
        (["run", "testapp.count_items", "--target-chunk-time", "-1"], "seconds > 0, got '-1'"),
        (["run", "testapp.count_items", "--target-chunk-time", "0"], "seconds > 0, got '0'"),
        (["set", "testapp.count_items", "--target-chunk-time", "0"], "seconds > 0, got '0'"),
        (["set", "testapp.count_items", "--sleep", "inf"], "seconds >= 0, got 'inf'"),
        # A malformed or unknown --param is refused before anything else (bug 16).
        (["run", "testapp.bump_records", "--param", "step=abc"], "is not a valid int"),
        (["run", "testapp.bump_records", "--param", "stepp=2"], "Unknown parameter(s)"),
        (["run", "testapp.bump_records", "--param", "step"], "expects key=value"),
        (["run", "testapp.count_items", "--database", "nope"], "Unknown database alias"),
        (["run", "testapp.needs_future_migration"], "requires migration(s) testapp.9999_not_yet"),
        (["status", "nothing.here"], "No backfill named 'nothing.here'"),
        (["pause", "testapp.count_items"], "never run on database 'default'; nothing to pause"),
        (["resume", "testapp.count_items"], "never run on database 'default'; nothing to resume"),
    ],
)
def test_user_errors_are_command_errors_and_write_nothing(
    run_command: Run, args: list[str], message: str
) -> None:
    Item.objects.bulk_create([Item() for _ in range(3)])
    with pytest.raises(CommandError) as excinfo:
        run_command(*args)
    assert message in str(excinfo.value)
    assert BackfillRun.objects.count() == 0
    assert set(Item.objects.values_list("counter", flat=True)) == {0}


def test_unknown_name_exits_non_zero_without_a_traceback() -> None:
    code, out, err = manage(["backfill", "run", "blog.populate_post_slug"])
    assert code == 1
    assert "CommandError: No backfill named 'blog.populate_post_slug'." in err
    assert "Did you mean: blog.populate_post_slugs" in err
    assert "Traceback" not in err


def test_unreachable_database_is_a_clear_error() -> None:
    import subprocess
    import sys

    from tests.conftest import EXAMPLE, child_env

    env = child_env(DATABASE_URL="postgres://nobody@127.0.0.1:1/none")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "backfill", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "CommandError: Database 'default' error: OperationalError" in result.stderr
    assert "Traceback" not in result.stderr


def test_pause_and_cancel_a_run_that_is_not_running(run_command: Run) -> None:
    Item.objects.bulk_create([Item() for _ in range(30)])
    run_command("run", "testapp.count_items", "--max-chunks", "1", "--progress", "none")
    BackfillRun.objects.update(state="failed")

    out, _ = run_command("pause", "testapp.count_items")
    assert "is now paused" in out
    out, _ = run_command("cancel", "testapp.count_items", "--no-input")
    assert "is now cancelled" in out
    run = BackfillRun.objects.get()
    assert (run.state, run.active_key) == ("cancelled", None)
    with pytest.raises(CommandError, match="was cancelled; pass --restart"):
        run_command("run", "testapp.count_items")
    run_command("run", "testapp.count_items", "--restart", "--no-input", "--progress", "none")
    assert set(Item.objects.values_list("counter", flat=True)) == {1, 2}
