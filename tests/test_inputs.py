"""Input backfills: CSV files and an iterable with a cursor, checkpointed exactly once."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from backfills import Outcome, run_backfill
from backfills.exceptions import BackfillFailed, RunNotResumable
from backfills.models import BackfillRun, QuarantinedRow
from tests.conftest import manage, wait_for, wait_until_killed_sessions_end
from tests.testapp.inputs import SOURCE_KEYS
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = "testapp.note_items_from_csv"
STRICT = "testapp.strict_note_items_from_csv"
COUNT = "testapp.count_items_from_csv"
CHAOS = "testapp.chaos_count_items_from_csv"
KEYS = "testapp.count_items_by_keys"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def items(count: int) -> list[int]:
    Item.objects.bulk_create([Item() for _ in range(count)], batch_size=5000)
    return list(Item.objects.order_by("pk").values_list("pk", flat=True))


def write_notes(path: Path, pks: list[int], bad: dict[int, str] | None = None) -> Path:
    """A CSV of (id, note, weight, comment): notes cycle gold/silver/bronze; *bad* replaces
    some lines' note. The comment is quoted, with commas, quotes and a line break."""
    bad = bad or {}
    lines = ["id,note,weight,comment"]
    for index, pk in enumerate(pks):
        note = bad.get(index, ["gold", "silver", "bronze"][index % 3])
        weight = "" if index % 2 else str(index)
        lines.append(f'{pk},{note},{weight},"row {index}, said ""hi""\nover two lines"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_csv_file_is_applied_line_by_line_with_typed_values(tmp: Path) -> None:
    pks = items(30)
    path = write_notes(tmp / "notes.csv", pks[:25])

    result = run_backfill(NOTES, parameters={"input": str(path)})

    assert result.outcome is Outcome.COMPLETED
    run = result.run
    assert (run.rows_total, run.rows_total_exact, run.rows_processed) == (25, True, 25)
    got = dict(Item.objects.values_list("pk", "note"))
    for index, pk in enumerate(pks[:25]):
        weight = 1 if index % 2 else index  # an empty value takes the column's default
        assert got[pk] == f"{['gold', 'silver', 'bronze'][index % 3]}:{weight}"
    assert set(Item.objects.filter(pk__in=pks[:25]).values_list("counter", flat=True)) == {1}
    assert set(Item.objects.filter(pk__in=pks[25:]).values_list("note", flat=True)) == {""}
    # The checkpoint: the last record's last line (two lines a record after the header) and
    # the byte offset of the end of the file.
    stored = BackfillRun.objects.get(pk=run.pk)
    assert json.loads(stored.cursor or "") == {"line": 51, "offset": path.stat().st_size}
    assert stored.horizon is not None and "sha256:" in stored.horizon


def test_a_bad_line_is_quarantined_with_its_line_number(tmp: Path) -> None:
    pks = items(12)
    path = write_notes(tmp / "notes.csv", pks, bad={5: "platinum"})

    result = run_backfill(NOTES, parameters={"input": str(path)})

    assert result.outcome is Outcome.COMPLETED
    assert (result.run.rows_processed, result.run.rows_failed) == (11, 1)
    row = QuarantinedRow.objects.get()
    assert row.row_pk == "line 12"  # header on line 1, two lines a record: record 5 on 12
    assert "platinum" in row.error_message and "line 12" in row.error_message
    assert Item.objects.get(pk=pks[5]).counter == 0
    assert Item.objects.exclude(pk=pks[5]).filter(counter=1).count() == 11


def test_without_quarantine_a_bad_line_fails_the_run_and_a_changed_file_is_refused(
    tmp: Path,
) -> None:
    pks = items(12)
    path = write_notes(tmp / "notes.csv", pks, bad={9: "tin"})

    with pytest.raises(BackfillFailed, match="line 20"):
        run_backfill(STRICT, parameters={"input": str(path)})

    run = BackfillRun.objects.get()
    assert run.state == "failed"
    # Two chunks of 4 committed before the one with the bad line; nothing after it.
    assert run.rows_processed == 8
    assert Item.objects.filter(counter=1).count() == 8
    # The file is fixed: a resume refuses the different file, --restart takes it.
    write_notes(path, pks)
    with pytest.raises(RunNotResumable, match="input changed since it started"):
        run_backfill(STRICT, parameters={"input": str(path)})
    assert run_backfill(STRICT, parameters={"input": str(path)}, restart=True).outcome is (
        Outcome.COMPLETED
    )
    assert Item.objects.filter(counter=2).count() == 8  # the restart applied every line again
    assert Item.objects.filter(counter=1).count() == 4


def test_a_resumed_csv_run_goes_on_after_its_last_committed_line(
    tmp: Path, run_command: Callable[..., tuple[str, str]]
) -> None:
    pks = items(40)
    path = write_notes(tmp / "notes.csv", pks)

    first = run_backfill(NOTES, parameters={"input": str(path)}, max_chunks=3)
    assert first.outcome is Outcome.PAUSED
    assert Item.objects.filter(counter=1).count() == 12
    cursor = json.loads(BackfillRun.objects.get().cursor or "")
    assert cursor["line"] == 1 + 12 * 2
    assert path.read_bytes()[: cursor["offset"]].count(b"\n") == cursor["line"]
    out, _ = run_command("status", NOTES)
    assert f"at cursor line 25 (byte {cursor['offset']:,})" in out, out

    second = run_backfill(NOTES, parameters={"input": str(path)})

    assert second.outcome is Outcome.COMPLETED and second.run.pk == first.run.pk
    assert Item.objects.filter(counter=1).count() == 40


def test_an_iterable_with_a_cursor_is_walked_and_resumed(tmp: Path) -> None:
    Item.objects.bulk_create([Item(pk=pk) for pk in range(1, 311)])

    first = run_backfill(KEYS, max_chunks=4)
    assert first.outcome is Outcome.PAUSED
    assert BackfillRun.objects.get().cursor == json.dumps(SOURCE_KEYS[27])
    second = run_backfill(KEYS)

    assert second.outcome is Outcome.COMPLETED
    assert (second.run.rows_total, second.run.rows_processed) == (100, 100)
    counted = set(Item.objects.filter(counter=1).values_list("pk", flat=True))
    assert counted == set(SOURCE_KEYS)
    assert not Item.objects.filter(counter__gt=1).exists()


def test_input_errors_are_clear(tmp: Path, run_command: Callable[..., tuple[str, str]]) -> None:
    missing = tmp / "nope.csv"
    with pytest.raises(CommandError, match="no such file"):
        run_command("run", COUNT, "--input", str(missing))
    with pytest.raises(CommandError, match="standard input"):
        run_command("run", COUNT, "--input", "-")
    with pytest.raises(CommandError, match="reads no input file"):
        run_command("run", "testapp.count_items", "--input", str(missing))
    headless = tmp / "headless.csv"
    headless.write_text("pk,note\n1,gold\n", encoding="utf-8")
    with pytest.raises(CommandError, match="the header has no column id"):
        run_command("run", COUNT, "--input", str(headless))
    latin = tmp / "latin.csv"
    latin.write_bytes(b"id\n1\n2\n" + "3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CommandError, match="line 4 is not utf-8 text"):
        run_command("run", COUNT, "--input", str(latin))
    assert not BackfillRun.objects.filter(rows_processed__gt=0).exists()
    # A run without its file, and parallel workers over a file, are refused too.
    code, out, err = manage(["backfill", "run", COUNT], project="tests")
    assert code != 0 and "Traceback" not in err and "--param input" in err, (out, err)
    good = tmp / "ids.csv"
    good.write_text("id\n1\n", encoding="utf-8")
    code, out, err = manage(
        ["backfill", "run", COUNT, "--input", str(good), "--workers", "1"], project="tests"
    )
    assert code != 0 and "Traceback" not in err and "without --workers" in err, (out, err)


LINES = 100_000
CHAOS_KILLS = 8


def test_a_100000_line_csv_killed_at_random_moments_applies_every_line_exactly_once(
    tmp: Path, spawn: Callable[[list[str]], subprocess.Popen[str]]
) -> None:
    pks = items(LINES)
    order = pks[:]
    random.Random(7).shuffle(order)  # the file lists the rows in another order than the table
    path = tmp / "ids.csv"
    path.write_text("id\n" + "".join(f"{pk}\n" for pk in order), encoding="utf-8")
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "12345")))
    args = ["backfill", "run", CHAOS, "--input", str(path), "--progress-interval", "0"]
    points = []
    for _ in range(CHAOS_KILLS):
        before = BackfillRun.objects.first()
        done = before.chunks_done if before else 0
        process = spawn(args)

        def working(process: subprocess.Popen[str] = process, done: int = done) -> bool:
            run = BackfillRun.objects.first()
            return process.poll() is not None or (
                run is not None and run.owner_pid == process.pid and run.chunks_done > done
            )

        wait_for(functools.partial(working))
        time.sleep(rng.uniform(0.0, 0.3))
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        wait_until_killed_sessions_end()
        run = BackfillRun.objects.get()
        assert run.state == "running" and run.chunks_done > done
        points.append(run.chunks_done)
        # What the checkpoint says is committed is exactly what the table holds: the
        # lines up to the cursor's (the header is line 1) counted once, the others not.
        cursor = json.loads(run.cursor or "")
        applied = cursor["line"] - 1
        assert run.rows_processed == applied < LINES
        assert path.read_bytes()[: cursor["offset"]].count(b"\n") == cursor["line"]
        counted = Item.objects.filter(counter=1)
        assert counted.count() == applied
        assert not Item.objects.filter(counter__gt=1).exists()
        assert not Item.objects.filter(pk__in=order[:applied]).exclude(counter=1).exists()

    code, out, err = manage([*args[:5], "--batch-size", "20000"], project="tests")

    assert code == 0, err
    run = BackfillRun.objects.get()
    assert (run.state, run.rows_processed) == ("completed", LINES)
    assert Item.objects.filter(counter=1).count() == LINES
    print(f"\nCSV chaos: {CHAOS_KILLS} SIGKILLs at chunks {points}")
