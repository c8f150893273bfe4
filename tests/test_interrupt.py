"""Real `manage.py` processes on the example project, interrupted by signals and run again."""

from __future__ import annotations

import signal

import pytest
from django.core.management import call_command

from backfills.models import BackfillRun
from blog.models import Post
from tests.conftest import manage, start_manage, wait_for
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "blog.populate_post_slugs"


def seed(count: int) -> None:
    call_command("seed_posts", count=count, duplicates=0.2, verbosity=0)


def chunks_done() -> int:
    return BackfillRun.objects.filter(name=NAME).values_list("chunks_done", flat=True).first() or 0


def assert_all_slugs_unique_and_filled() -> None:
    assert not Post.objects.filter(slug__isnull=True).exists()
    slugs = list(Post.objects.values_list("slug", flat=True))
    assert len(slugs) == len(set(slugs))


# SIGHUP: the terminal closed or the SSH session dropped; the run pauses like on Ctrl-C.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_pauses_after_the_chunk_and_a_second_run_resumes(sig: signal.Signals) -> None:
    seed(3000)
    process = start_manage(
        [
            "backfill",
            "run",
            NAME,
            "--batch-size",
            "100",
            "--sleep",
            "0.05",
            "--progress-interval",
            "0",
        ]
    )
    wait_for(lambda: chunks_done() >= 3)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 128 + sig, err
    assert f"{sig.name} received: stopping after the current chunk commits" in err
    run = BackfillRun.objects.get()
    assert run.state == "paused"
    assert run.status_reason == f"interrupted by {sig.name}"
    assert 3 <= run.chunks_done < 30
    assert run.owner_token is None
    # Exactly the committed chunks are done: the checkpoint matches the data.
    done = Post.objects.filter(slug__isnull=False).count()
    assert done == run.rows_processed == run.chunks_done * 100
    assert not Post.objects.filter(pk__gt=int(run.cursor), slug__isnull=False).exists()
    assert f"Paused run #{run.pk} of {NAME} at cursor pk {run.cursor}" in out

    code, out, err = manage(["backfill", "run", NAME, "--batch-size", "500"])

    assert code == 0, err
    assert f"Resuming run #{run.pk} of {NAME} from its checkpoint: {done:,} of 3,000" in out
    assert "Completed run" in out
    run.refresh_from_db()
    assert (run.state, run.rows_scanned, run.rows_processed) == ("completed", 3000, 3000)
    assert_all_slugs_unique_and_filled()


def test_second_signal_aborts_the_open_chunk() -> None:
    Item.objects.bulk_create([Item() for _ in range(100)])
    # About a second per chunk, so the second signal lands while a chunk is open.
    process = start_manage(
        ["backfill", "run", "testapp.crawl_items", "--progress-interval", "0"],
        project="tests",
    )
    wait_for(lambda: BackfillRun.objects.filter(chunks_done__gte=1).exists())
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    assert "SIGINT received" in process.stderr.readline() + process.stderr.readline()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "Aborted by a second SIGINT" in err
    run = BackfillRun.objects.get()
    assert run.state == "paused"
    assert "aborted by SIGINT" in run.status_reason
    assert run.chunks_done == 1  # the second chunk was open and rolled back
    counters = list(Item.objects.order_by("pk").values_list("counter", flat=True))
    assert counters == [1] * 10 + [0] * 90
