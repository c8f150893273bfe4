"""`manage.py backfill ...` as a new user meets it: issue 12's command and display bugs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backfills.models import BackfillRun
from tests.conftest import EXAMPLE, ROOT, child_env, manage
from tests.testapp.models import Item, Record

pytestmark = pytest.mark.django_db(transaction=True)

Run = Callable[..., tuple[str, str]]


def items(count: int) -> None:
    Item.objects.bulk_create([Item() for _ in range(count)])


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -- bug 1: list shows where the data stands ---------------------------------------------------


def test_list_shows_reversed_after_a_completed_reverse(run_command: Run) -> None:
    Record.objects.bulk_create([Record() for _ in range(5)])
    run_command("run", "testapp.fill_records", "--progress", "none")
    run_command("run", "testapp.fill_records", "--reverse", "--progress", "none")

    out, _ = run_command("list")

    row = next(line for line in out.splitlines() if "│ testapp.fill_records " in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[1].startswith("reversed (#")


# -- bug 2: status shows a run whose owner is gone as interrupted ------------------------------


def test_status_shows_a_run_whose_owner_is_gone_as_interrupted(run_command: Run) -> None:
    items(30)
    run_command("run", "testapp.count_items", "--max-chunks", "1", "--progress", "none")
    BackfillRun.objects.update(
        state="running",
        owner_token="gone",
        owner_host=socket.gethostname(),
        owner_pid=dead_pid(),
        heartbeat_at=timezone.now(),
    )

    out, _ = run_command("status")

    row = next(line for line in out.splitlines() if "testapp.count_items" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][2] == "interrupted"
    assert "interrupted: its owner (" in out and "is gone" in out
    (summary,) = __import__("json").loads(run_command("status", "--json")[0])
    assert (summary["state"], summary["recorded_state"]) == ("interrupted", "running")


# -- bug 7: a dry run starts where the unfinished run would resume -----------------------------


def test_dry_run_starts_at_the_unfinished_runs_checkpoint(run_command: Run) -> None:
    items(40)
    run_command("run", "testapp.count_items", "--max-chunks", "2", "--progress", "none")
    run = BackfillRun.objects.get()

    out, _ = run_command("run", "testapp.count_items", "--dry-run", "--dry-run-chunks", "1")

    assert f"Started after pk {run.cursor}, the checkpoint of unfinished run #{run.pk}" in out
    assert "Dry run of testapp.count_items: 1 chunk, 10 rows walked" in out
    assert "Projected: 20 rows left to walk" in out
    sampled = [int(m) for m in re.findall(r"^│ (\d+) +│ counter", out, re.MULTILINE)]
    assert sampled and min(sampled) > int(run.cursor)
    # Rolled back: the run and the data are as they were.
    assert Item.objects.filter(counter=1).count() == 20


def test_dry_run_without_a_run_says_it_starts_at_the_first_row(run_command: Run) -> None:
    items(5)
    out, _ = run_command("run", "testapp.count_items", "--dry-run")
    assert "Started at the first row" in out
    assert "1 chunk, 5 rows walked" in out


# -- bug 12: the demo's database is the example project's default ------------------------------


def test_make_demo_writes_the_example_projects_default_database() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (demo_db,) = re.findall(r"^DEMO_DB :?= (.+)$", makefile, re.MULTILINE)
    demo_db = demo_db.replace("$(CURDIR)", str(ROOT))
    env = child_env(DJANGO_SETTINGS_MODULE="example_project.settings")
    env.pop("DATABASE_URL")
    name = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DATABASES['default']['NAME'])",
        ],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(name) == Path(demo_db)


# -- bug 13: before migrate, every verb gives run's hint ---------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["status"],
        ["pause", "blog.populate_post_slugs"],
        ["cancel", "blog.populate_post_slugs", "--no-input"],
        ["run", "blog.populate_post_slugs"],
    ],
)
def test_verbs_before_migrate_say_to_migrate(args: list[str], tmp_path: Path) -> None:
    env = child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "backfill", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "run `manage.py migrate" in result.stderr
    assert "no such table" not in result.stderr and "Traceback" not in result.stderr


# -- bug 14: Django's base options after the subcommand ----------------------------------------


def test_django_base_options_are_accepted_after_the_subcommand() -> None:
    code, out, err = manage(
        [
            "backfill",
            "list",
            "--settings",
            "example_project.settings",
            "--pythonpath",
            str(EXAMPLE),
            "--skip-checks",
            "--traceback",
            "--no-color",
        ]
    )
    assert code == 0, err
    assert "blog.populate_post_slugs" in out


def test_force_color_after_the_subcommand(run_command: Run) -> None:
    out, _ = run_command("status", "--force-color")
    assert out.strip() == "No runs recorded."
    out, _ = run_command("list", "-v", "0", "--force-color")
    assert "\x1b[" in out  # a console forced to colour writes escape codes


# -- bug 15: the small ones --------------------------------------------------------------------


def test_plain_progress_ends_with_one_final_line_and_counts_in_the_singular(
    run_command: Run,
) -> None:
    items(5)
    out, _ = run_command("run", "testapp.count_items", "--progress-interval", "0")
    lines = out.splitlines()
    assert len(lines) == 3, out  # start, one progress line, completed
    assert lines[1].startswith("testapp.count_items: 5/5 rows (100.0%)")
    assert "5 rows walked, 5 processed in 1 chunk," in lines[2]


def test_a_reverse_runs_lines_say_reverse(run_command: Run) -> None:
    Record.objects.bulk_create([Record() for _ in range(3)])
    run_command("run", "testapp.fill_records", "--progress", "none")
    out, _ = run_command("run", "testapp.fill_records", "--reverse", "--progress-interval", "0")
    lines = out.splitlines()
    assert "of testapp.fill_records (reverse):" in lines[0]
    assert lines[1].startswith("testapp.fill_records (reverse): 3/3 rows")
    assert "of testapp.fill_records (reverse):" in lines[-1]


def test_run_and_resume_of_a_cancelled_run_both_point_to_restart(run_command: Run) -> None:
    items(30)
    run_command("run", "testapp.count_items", "--max-chunks", "1", "--progress", "none")
    run_command("cancel", "testapp.count_items", "--no-input")

    with pytest.raises(CommandError) as ran:
        run_command("run", "testapp.count_items")
    with pytest.raises(CommandError) as resumed:
        run_command("resume", "testapp.count_items")

    assert "--restart" in str(ran.value)
    assert "`backfill run testapp.count_items --restart`" in str(resumed.value)
    assert "use `backfill run`" not in str(resumed.value)


def test_pause_and_cancel_say_who_acted(run_command: Run) -> None:
    items(30)
    run_command("run", "testapp.count_items", "--max-chunks", "1", "--progress", "none")
    BackfillRun.objects.update(state="failed")
    run_command("pause", "testapp.count_items")
    out, _ = run_command("status")
    assert f"paused by `backfill pause` by {os.environ.get('USER', '')}" in out or "@" in out
    assert f"@{socket.gethostname()}" in BackfillRun.objects.get().status_reason


@pytest.mark.parametrize(
    ("verb", "option"),
    [("set", "--target-chunk-time"), ("set", "--sleep"), ("verify", "--param")],
)
def test_every_option_has_help(verb: str, option: str) -> None:
    from backfills.management.commands.backfill import Command

    parser = Command().create_parser("manage.py", "backfill")
    (subparsers,) = [a for a in parser._actions if a.dest == "subcommand"]
    sub = subparsers.choices[verb]  # type: ignore[attr-defined]
    (action,) = [a for a in sub._actions if option in a.option_strings]
    assert action.help


# -- bug 16: parameters are checked first ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["run", "testapp.bump_records", "--param", "step=abc"],
        ["resume", "testapp.bump_records", "--param", "step=abc"],
        ["verify", "testapp.bump_records", "--param", "step=abc"],
        ["run", "testapp.bump_records", "--dry-run", "--param", "step=abc"],
    ],
)
def test_malformed_param_is_refused_when_the_latest_run_completed(
    run_command: Run, args: list[str]
) -> None:
    Record.objects.bulk_create([Record() for _ in range(3)])
    run_command("run", "testapp.bump_records", "--progress", "none")
    with pytest.raises(CommandError, match="step='abc' is not a valid int"):
        run_command(*args)


def test_invalid_option_values_exit_2_with_usage() -> None:
    code, _, err = manage(["backfill", "run", "blog.populate_post_slugs", "--sleep", "-1"])
    assert code == 2
    assert "usage:" in err and "finite number of seconds >= 0" in err
    # ... and the README's list of exit statuses says so.
    assert "`2` an invalid option value" in (ROOT / "README.md").read_text()


def test_call_command_output_goes_to_the_given_stream() -> None:
    from io import StringIO

    out = StringIO()
    call_command("backfill", "status", stdout=out)
    assert out.getvalue().strip() == "No runs recorded."
