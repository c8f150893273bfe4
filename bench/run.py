#!/usr/bin/env python
"""`make bench`: the ways people backfill, measured side by side in one run.

Every strategy computes the same slug from the title of the example project's Post table
(titles are plain words and numbers, so Django's slugify() and SQL's LOWER(REPLACE()) agree).
Each strategy runs in a fresh child process (so its peak RSS is its own) on freshly reset data,
is verified afterwards, and is repeated; the table shows medians and the ratios the targets are
about. The machine is shared and noisy: read ratios, not absolute times.

    make bench                                   # SQLite, 200,000 rows
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test make bench   # 1,000,000 rows
    make bench BENCH_ARGS="--rows 20000 --repeat 1"
    make bench BENCH_ARGS="--parallel --rows 20000"   # parallel runs: bench/parallel.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ["DATABASE_URL"] = os.environ.get("DATABASE_URL") or f"sqlite:///{ROOT / 'bench.sqlite3'}"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.db.models import F, Value  # noqa: E402
from django.db.models.functions import Lower, Replace  # noqa: E402
from django.utils import timezone  # noqa: E402
from django.utils.text import slugify  # noqa: E402

from backfills import Backfill, RowBackfill, UpdateBackfill  # noqa: E402
from backfills.engine.ledger import Lease, Ledger  # noqa: E402
from backfills.engine.runner import Runner, RunOptions  # noqa: E402
from backfills.events import ChunkCommitted, Event  # noqa: E402
from backfills.models import BackfillRun  # noqa: E402
from backfills.registry import registry  # noqa: E402
from blog.models import Post  # noqa: E402

CHUNK = 1000
EXPECTED = Lower(Replace(F("title"), Value(" "), Value("-")))

# -- backfills under test ----------------------------------------------------------------


class SetBased(UpdateBackfill):
    model = "blog.Post"
    name = "bench.set_based"
    updates = {"slug": EXPECTED}

    def get_queryset(self) -> Any:
        return Post.objects.filter(slug__isnull=True)


class RowSlug(RowBackfill):
    model = "blog.Post"
    name = "bench.row"
    fields = ["slug"]

    def get_queryset(self) -> Any:
        return Post.objects.filter(slug__isnull=True).only("pk", "title")

    def transform(self, post: Post) -> None:
        post.slug = slugify(post.title)


class RowSlugRecords(RowSlug):
    """The same row backfill, reading plain records instead of model instances."""

    name = "bench.row_records"
    read_fields = ["title"]

    def get_queryset(self) -> Any:
        return Post.objects.filter(slug__isnull=True)


class RowSlugRecordsPrefetch(RowSlugRecords):
    """The records backfill reading each next chunk ahead on a second connection."""

    name = "bench.row_records_prefetch"
    prefetch = True


class FreeFormBulkUpdate(Backfill):
    model = "blog.Post"
    name = "bench.free_form"

    def get_queryset(self) -> Any:
        return Post.objects.filter(slug__isnull=True).only("pk", "title")

    def process_chunk(self, rows: list[Post]) -> None:
        for post in rows:
            post.slug = slugify(post.title)
        self.bulk_update(rows, ["slug"])


for cls in (SetBased, RowSlug, RowSlugRecords, RowSlugRecordsPrefetch, FreeFormBulkUpdate):
    if cls.name not in registry:
        registry.register(cls)


# -- strategies (run in the child process) -------------------------------------------------


def ceiling(rows: int) -> list[float]:
    started = time.perf_counter()
    with transaction.atomic():
        Post.objects.update(slug=EXPECTED)
    return [time.perf_counter() - started]


def seed_save_loop(rows: int) -> list[float]:
    durations = []
    for post in Post.objects.filter(slug__isnull=True).order_by("pk")[:rows]:
        started = time.perf_counter()
        post.slug = slugify(post.title)
        post.save(update_fields=["slug"])
        durations.append(time.perf_counter() - started)
    return durations


def seed_bulk_update(rows: int) -> list[float]:
    durations, batch = [], []
    started = time.perf_counter()
    for post in (
        Post.objects.filter(slug__isnull=True).order_by("pk")[:rows].iterator(chunk_size=CHUNK)
    ):
        post.slug = slugify(post.title)
        batch.append(post)
        if len(batch) == CHUNK:
            Post.objects.bulk_update(batch, ["slug"])
            durations.append(time.perf_counter() - started)
            batch, started = [], time.perf_counter()
    if batch:
        Post.objects.bulk_update(batch, ["slug"])
        durations.append(time.perf_counter() - started)
    return durations


def seed_offset(rows: int) -> list[float]:
    """The migration everyone has written: OFFSET slices of an unordered queryset."""
    durations = []
    for offset in range(0, rows, CHUNK):
        started = time.perf_counter()
        batch = list(Post.objects.all()[offset : offset + min(CHUNK, rows - offset)])
        for post in batch:
            post.slug = slugify(post.title)
        Post.objects.bulk_update(batch, ["slug"])
        durations.append(time.perf_counter() - started)
    return durations


def hand_values_update(batch: list[Post]) -> None:
    """UPDATE ... FROM (VALUES ...): what a careful engineer writes by hand (written out here
    on purpose, independent of backfills.writers)."""
    table, q = Post._meta.db_table, connection.ops.quote_name
    params = [value for post in batch for value in (post.pk, post.slug)]
    if connection.vendor == "mysql":
        rows = " UNION ALL ".join(
            ["SELECT %s AS id, %s AS slug"] + ["SELECT %s, %s"] * (len(batch) - 1)
        )
        sql = f"UPDATE {q(table)} t JOIN ({rows}) v ON t.id = v.id SET t.slug = v.slug"
    else:
        rows = ", ".join(["(%s, %s)"] * len(batch))
        names = "AS v(id, slug)" if connection.vendor == "postgresql" else "AS v"
        id_, slug = (
            ("v.id", "v.slug")
            if connection.vendor == "postgresql"
            else (
                "v.column1",
                "v.column2",
            )
        )
        sql = (
            f"UPDATE {q(table)} SET slug = {slug} FROM (VALUES {rows}) {names} "
            f"WHERE {q(table)}.id = {id_}"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def hand_keyset_values(rows: int) -> list[float]:
    """A careful hand-written loop: keyset chunks of 1,000, slugify in Python, one
    UPDATE ... FROM (VALUES ...) per chunk, each chunk its own transaction."""
    durations, last = [], 0
    while True:
        started = time.perf_counter()
        with transaction.atomic():
            batch = list(
                Post.objects.filter(pk__gt=last).order_by("pk").only("pk", "title")[:CHUNK]
            )
            if not batch:
                break
            for post in batch:
                post.slug = slugify(post.title)
            hand_values_update(batch)
        last = batch[-1].pk
        durations.append(time.perf_counter() - started)
    return durations


def floor_read_compute(rows: int) -> list[float]:
    """Not a backfill: the least a Python row backfill on one connection must spend besides
    writing. Keyset reads of (id, title) in 10,000-row chunks with a raw cursor, slugify each,
    write nothing. ceiling + this = a bound no such backfill can beat on this machine."""
    durations, last, done = [], 0, 0
    table = connection.ops.quote_name(Post._meta.db_table)
    with connection.cursor() as cursor:
        while done < rows:
            started = time.perf_counter()
            cursor.execute(
                f"SELECT id, title FROM {table} WHERE id > %s ORDER BY id LIMIT %s",
                [last, min(10 * CHUNK, rows - done)],
            )
            batch = cursor.fetchall()
            if not batch:
                break
            slugs = [slugify(title) for _, title in batch]
            assert len(slugs) == len(batch)
            last, done = batch[-1][0], done + len(batch)
            durations.append(time.perf_counter() - started)
    return durations


BUSY_SECONDS = 10.0


def busy_read(rows: int) -> list[float]:
    """Not a backfill: one connection keeps the server busy for BUSY_SECONDS with a read-only,
    CPU-bound query loop (no writes, no row locks, no WAL). A backfill running flat out keeps a
    backend at least this busy and writes besides, so the writer's latency during this is about
    the least any of them can cost it on this machine, however it chunks."""
    if connection.vendor == "postgresql":
        # In the select list the series streams; in FROM it is stored first (a temp file).
        sql = "SELECT sum(x) FROM (SELECT generate_series(1, 2000000) AS x) s"
    elif connection.mysql_is_mariadb:
        # Not COUNT(*): the Sequence engine answers that from the range without a scan.
        sql = "SELECT SUM(seq % 7) FROM seq_1_to_2000000"
    else:
        sql = "SELECT BENCHMARK(2000000, MD5('x'))"
    durations = []
    deadline = time.perf_counter() + BUSY_SECONDS
    with connection.cursor() as cursor:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            durations.append(time.perf_counter() - started)
    return durations


CHECKPOINT_SECONDS: list[float] = []


def hand_keyset_set(rows: int) -> list[float]:
    """A minimal hand-written set-based loop: keyset windows of 20,000 rows, one UPDATE per
    window, each its own transaction; no checkpoint, no runner. What keyset chunking itself
    costs against the single statement."""
    durations, last, done = [], 0, 0
    table = connection.ops.quote_name(Post._meta.db_table)
    with connection.cursor() as cursor:
        while done < rows:
            started = time.perf_counter()
            size = min(20 * CHUNK, rows - done)
            with transaction.atomic():
                cursor.execute(
                    f"SELECT id FROM {table} WHERE id > %s ORDER BY id LIMIT 1 OFFSET %s",
                    [last, size - 1],
                )
                found = cursor.fetchone()
                upper = found[0] if found else None
                bound = "" if upper is None else " AND id <= %s"
                cursor.execute(
                    f"UPDATE {table} SET slug = LOWER(REPLACE(title, ' ', '-')) "
                    f"WHERE slug IS NULL AND id > %s{bound}",
                    [last] + ([] if upper is None else [upper]),
                )
            durations.append(time.perf_counter() - started)
            if upper is None:
                break
            last, done = upper, done + size
    return durations


class TimedLease(Lease):
    """Times this process's checkpoint writes (the checkpoint's share of the run, measured
    exactly rather than as a difference of two noisy runs); ``skip`` leaves them out, giving
    up every resume guarantee, to show what they cost."""

    skip = False

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        at = timezone.now() if self.skip else super().checkpoint(*args, **kwargs)
        CHECKPOINT_SECONDS[-1] += time.perf_counter() - started
        return at


class SkippedLease(TimedLease):
    skip = True


def bench_ledger(checkpoints: bool) -> Ledger:
    ledger = Ledger("default", 30.0)
    ledger.lease_class = TimedLease if checkpoints else SkippedLease
    return ledger


def ours(name: str, **options: Any) -> Any:
    checkpoints = options.pop("checkpoints", True)

    def strategy(rows: int) -> list[float]:
        durations: list[float] = []

        def on_event(event: Event) -> None:
            if isinstance(event, ChunkCommitted):
                durations.append(event.seconds)

        CHECKPOINT_SECONDS.append(0.0)
        Runner(
            registry.get(name),
            options=RunOptions(restart=True, limit=rows, **options),
            listeners=[on_event],
            ledger=bench_ledger(checkpoints),
        ).run()
        return durations

    return strategy


STRATEGIES: dict[str, Any] = {
    "ceiling": ceiling,
    "seed-save-loop": seed_save_loop,
    "seed-bulk-update": seed_bulk_update,
    "seed-offset": seed_offset,
    "hand-keyset-values": hand_keyset_values,
    "hand-keyset-set": hand_keyset_set,
    "ours-set-fixed": ours("bench.set_based", batch_size=CHUNK),
    "ours-set-adaptive": ours("bench.set_based"),
    "ours-set-0.4s": ours("bench.set_based", target_chunk_time=0.4),
    "ours-row-fixed": ours("bench.row", batch_size=CHUNK),
    "ours-row-adaptive": ours("bench.row"),
    # Paced toward the online target: 1,000-row chunks and a sleep after each.
    "ours-row-paced": ours("bench.row", batch_size=CHUNK, sleep=0.1),
    "ours-row-paced-0.3": ours("bench.row", batch_size=CHUNK, sleep=0.3),
    "ours-records-fixed": ours("bench.row_records", batch_size=CHUNK),
    "ours-records-adaptive": ours("bench.row_records"),
    "ours-records-prefetch": ours("bench.row_records_prefetch"),
    "ours-records-no-checkpoint": ours("bench.row_records", batch_size=CHUNK, checkpoints=False),
    "floor-read-compute": floor_read_compute,
    "busy-read": busy_read,
    "ours-free-form-bulk-update": ours("bench.free_form", batch_size=CHUNK),
}


def pin(cpu: int | None, db: Any) -> None:
    """Pin the calling thread, and its PostgreSQL backend when the server is on this machine,
    to one CPU (root, Linux). On a 2-core machine that shares the database server, the writer
    and the backfill, this keeps the two connections from taking each other's CPU, as they
    would not on a database server with cores to spare."""
    if cpu is None:
        return
    os.sched_setaffinity(0, {cpu})
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    # Only a postgres process of this machine (not a pid of a server in a container).
    comm = Path(f"/proc/{backend}/comm")
    if comm.exists() and comm.read_text().startswith("postgres"):
        os.sched_setaffinity(backend, {cpu})


def can_pin() -> str | None:
    """Why the online-impact runs cannot be pinned to CPUs here, or None if they can."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return "needs Linux and two CPUs"
    if os.geteuid() != 0:
        return "needs root to pin the server's backends"
    if connection.vendor != "postgresql" or connection.settings_dict["HOST"] not in (
        "",
        "localhost",
        "127.0.0.1",
    ):
        return "needs PostgreSQL on this machine"
    return None


def child(strategy: str, rows: int) -> None:
    cpu = os.environ.get("BENCH_PIN_CPU")
    pin(None if cpu is None else int(cpu), connection)
    started = time.perf_counter()
    durations = STRATEGIES[strategy](rows)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "durations": durations,
                "peak_rss_mb": peak_kb / 1024,
                "checkpoint_seconds": sum(CHECKPOINT_SECONDS),
            }
        )
    )


# -- data --------------------------------------------------------------------------------


def generate(rows: int) -> None:
    """Fill blog_post with `rows` posts in one SQL statement (not timed)."""
    call_command("migrate", verbosity=0)
    table = connection.ops.quote_name(Post._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(Post.tags.through._meta.db_table)}")
        cursor.execute(f"DELETE FROM {table}")
        columns = "title, body, status, created_at, seo_title, seo_description"
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT 'Post ' || i || ' Keyset Chunk ' "
                "|| (i %% 97), '', 'draft', now(), '', '' FROM generate_series(1, %s) i",
                [rows],
            )
        elif connection.vendor == "mysql" and connection.mysql_is_mariadb:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT CONCAT('Post ', seq, ' Keyset Chunk ', "
                f"seq % 97), '', 'draft', NOW(6), '', '' FROM seq_1_to_{int(rows)}"
            )
        else:
            if connection.vendor == "mysql":
                cursor.execute(f"SET SESSION cte_max_recursion_depth = {int(rows) + 1}")
            concat = (
                "CONCAT('Post ', i, ' Keyset Chunk ', i %% 97)"
                if connection.vendor == "mysql"
                else "'Post ' || i || ' Keyset Chunk ' || (i %% 97)"
            )
            cursor.execute(
                f"INSERT INTO {table} ({columns}) WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL "
                f"SELECT i + 1 FROM seq WHERE i < %s) SELECT {concat}, '', 'draft', "
                "CURRENT_TIMESTAMP, '', '' FROM seq",
                [rows],
            )
    reset()


def reset() -> None:
    Post.objects.filter(slug__isnull=False).update(slug=None)
    BackfillRun.objects.all().delete()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(Post._meta.db_table)}")
        elif connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def verify(expected_rows: int) -> tuple[bool, str]:
    filled = Post.objects.filter(slug__isnull=False)
    wrong = filled.exclude(slug=EXPECTED).count()
    count = filled.count()
    if wrong:
        return False, f"{wrong:,} wrong slugs"
    if count != expected_rows:
        return (
            False,
            f"{count:,} of {expected_rows:,} rows filled ({expected_rows - count:,} skipped)",
        )
    return True, "ok"


# -- online impact ----------------------------------------------------------------------------


class Writer(threading.Thread):
    """The application: updates random rows one at a time, recording each statement's latency."""

    def __init__(self, max_pk: int, cpu: int | None = None, flush: bool = True) -> None:
        super().__init__(daemon=True)
        self.max_pk = max_pk
        self.cpu = cpu
        #: False: the writer's commits do not wait for the WAL flush (PostgreSQL
        #: synchronous_commit = off), to see how much of its latency is flushing WAL.
        self.flush = flush
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        db = connections["default"]
        table = db.ops.quote_name(Post._meta.db_table)
        try:
            pin(self.cpu, db)
            if not self.flush:
                with db.cursor() as cursor:
                    cursor.execute("SET synchronous_commit = off")
            while not self.stop.is_set():
                pk = rng.randint(1, self.max_pk)
                started = time.perf_counter()
                with db.cursor() as cursor:
                    cursor.execute(f"UPDATE {table} SET body = %s WHERE id = %s", ["x", pk])
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.002)
        except BaseException as exc:  # re-raised by the parent: no numbers from a dead writer
            self.error = exc
        finally:
            db.close()


def online_impact(rows: int, pinned: bool, rounds: int) -> list[dict[str, Any]]:
    """Each scenario `rounds` times, interleaved (the machine's own noise moves an idle p99
    by 2x between minutes); medians per scenario, and the worst single wait of any round."""
    from django.db.models import Max

    max_pk = Post.objects.aggregate(m=Max("pk"))["m"]
    # About 10 s each.
    paced_rows, slower_rows = min(rows, 100 * CHUNK), min(rows, 30 * CHUNK)
    # (label, strategy or None for idle, rows, pinned, writer flushes WAL at commit)
    scenarios: list[tuple[str, str | None, int, bool, bool]] = [
        ("idle (writer alone)", None, 0, False, True),
        ("busy server: read-only query loop", "busy-read", 0, False, True),
        ("single UPDATE (ceiling)", "ceiling", rows, False, True),
        ("our row backfill, defaults", "ours-row-adaptive", rows, False, True),
        ("our set-based backfill, defaults", "ours-set-adaptive", rows, False, True),
        ("our row backfill, records, prefetch", "ours-records-prefetch", rows, False, True),
        ("our row, 1,000-row chunks, --sleep 0.1", "ours-row-paced", paced_rows, False, True),
        ("our row, 1,000-row chunks, --sleep 0.3", "ours-row-paced-0.3", slower_rows, False, True),
    ]
    if pinned:
        scenarios += [
            ("pinned: idle (writer alone)", None, 0, True, True),
            ("pinned: our row backfill, defaults", "ours-row-adaptive", rows, True, True),
            ("pinned: our set-based, defaults", "ours-set-adaptive", rows, True, True),
        ]
    if connection.vendor == "postgresql":
        # Diagnosis, not a setting to use: the same writer with commits that do not wait for
        # their WAL flush. Every commit must flush all WAL written before it, the backfill's
        # included; if the p99 ratio falls here, that shared flush is what the writer waits on.
        scenarios += [
            ("no-flush writer: idle", None, 0, False, False),
            ("no-flush writer: our row backfill", "ours-row-adaptive", rows, False, False),
            ("no-flush writer: our set-based", "ours-set-adaptive", rows, False, False),
        ]
    measured: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in scenarios}
    for _ in range(rounds):
        for label, strategy, n, pin_cpus, flush in scenarios:
            reset()
            writer = Writer(max_pk, cpu=0 if pin_cpus else None, flush=flush)
            writer.start()
            seconds, chunks = None, []
            if strategy is None:
                time.sleep(5)
            else:
                env = {"BENCH_PIN_CPU": "1"} if pin_cpus else None
                out = run_child(strategy, n, env=env)
                seconds, chunks = out["seconds"], out["durations"]
            writer.stop.set()
            writer.join()
            if writer.error is not None or not writer.latencies:
                raise RuntimeError(f"the writer failed during {label!r}") from writer.error
            lat = sorted(writer.latencies)
            measured[label].append(
                {
                    "writes": len(lat),
                    "p50_ms": 1000 * percentile(lat, 50),
                    "p99_ms": 1000 * percentile(lat, 99),
                    "max_ms": 1000 * lat[-1],
                    # CPU scheduling delays a write by a few ms; a write this slow waited on a
                    # row lock held by a chunk (or the single UPDATE).
                    "over_20ms_pct": 100 * sum(1 for x in lat if x > 0.020) / len(lat),
                    "rows_per_s": n / seconds if seconds and n else None,
                    # A row the writer wants can be locked for as long as the chunk holding it.
                    "chunk_max_ms": 1000 * max(chunks) if n and chunks else None,
                }
            )
    results = []
    for label, strategy, n, pin_cpus, flush in scenarios:
        runs = measured[label]
        rates = [r["rows_per_s"] for r in runs if r["rows_per_s"]]
        chunk_maxes = [r["chunk_max_ms"] for r in runs if r["chunk_max_ms"]]
        results.append(
            {
                "scenario": label,
                "strategy": strategy,
                "rows": n,
                "pinned": pin_cpus,
                "flush": flush,
                "rounds": len(runs),
                "rows_per_s": statistics.median(rates) if rates else None,
                "writes": statistics.median(r["writes"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "p99_ms_rounds": [r["p99_ms"] for r in runs],
                "max_ms": max(r["max_ms"] for r in runs),
                "max_ms_rounds": [r["max_ms"] for r in runs],
                "chunk_max_ms": max(chunk_maxes) if chunk_maxes else None,
                "over_20ms_pct": statistics.median(r["over_20ms_pct"] for r in runs),
            }
        )
    return results


# -- the parent -------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_child(strategy: str, rows: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", strategy, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_online_impact(args: argparse.Namespace, rows: int) -> list[dict[str, Any]]:
    """Run and print the online-impact scenarios (PostgreSQL and MariaDB/MySQL only)."""
    online: list[dict[str, Any]] = []
    if connection.vendor == "sqlite":
        return online
    if args.online_rounds < 1:
        raise SystemExit("--online-rounds must be at least 1")
    print(
        f"\nonline impact: a writer updating random rows, one at a time "
        f"({args.online_rounds} interleaved rounds; medians, max of all rounds)",
        flush=True,
    )
    why_not = "--no-pin" if args.no_pin else can_pin()
    if why_not:
        print(f"(no pinned runs: {why_not})")
    online = online_impact(rows, pinned=why_not is None, rounds=args.online_rounds)
    busy = next(o for o in online if o["strategy"] == "busy-read")["p99_ms"]
    print(
        f"{'scenario':<40} {'rows/s':>8} {'writes':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>8} {'p99/idle':>9} {'p99/busy':>9} {'>20 ms':>7} {'chunk max':>10}"
    )
    for o in online:
        idle = next(i for i in online if (i["pinned"], i["flush"]) == (o["pinned"], o["flush"]))[
            "p99_ms"
        ]
        rate = f"{o['rows_per_s']:>8,.0f}" if o["rows_per_s"] else f"{'':>8}"
        versus_busy = o["p99_ms"] / busy if not o["pinned"] and o["flush"] else None
        print(
            f"{o['scenario']:<40} {rate} {o['writes']:>7,.0f} {o['p50_ms']:>7.2f} "
            f"{o['p99_ms']:>7.2f} {o['max_ms']:>8.1f} {o['p99_ms'] / idle:>9.2f} "
            + (f"{versus_busy:>9.2f}" if versus_busy is not None else f"{'':>9}")
            + f" {o['over_20ms_pct']:>6.2f}%"
            + (f" {o['chunk_max_ms']:>10.0f}" if o["chunk_max_ms"] else "")
        )
    print("targets: during our backfill writer p99 <= 3x idle, max < 250 ms")
    print(
        "max ms: the worst single write of any round; chunk max: the longest chunk (for the "
        "single UPDATE, the statement) in ms: a row it holds stays locked up to that long"
    )
    print(
        "busy server: one connection running a CPU-bound read-only query, no writes or locks; "
        "what any busy backend costs the writer here"
    )
    if any(o["pinned"] for o in online):
        print(
            "pinned: the writer and its backend on CPU 0, the backfill and its backend on "
            "CPU 1 (p99/idle against the pinned idle run)"
        )
    if any(not o["flush"] for o in online):
        print(
            "no-flush writer: synchronous_commit = off for the writer only, a diagnosis "
            "(p99/idle against its own idle run)"
        )
    return online


def main() -> None:
    if "--parallel" in sys.argv[1:]:
        # The parallel runs (`run --workers N`) have their own scenarios and options.
        from parallel import main as parallel_main

        parallel_main([arg for arg in sys.argv[1:] if arg != "--parallel"])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, help="table size (default: 1,000,000 on PostgreSQL, 200,000 elsewhere)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per strategy (median)")
    parser.add_argument("--save-cap", type=int, default=5000, help="rows for seed-save-loop")
    parser.add_argument(
        "--slow-cap",
        type=int,
        default=100_000,
        help="rows for the bulk_update-bound strategies (seed-bulk-update, seed-offset, "
        "ours-free-form-bulk-update)",
    )
    parser.add_argument(
        "--json",
        help="where to write the results (default: bench-results.json, or "
        "bench-online.json with --online-only)",
    )
    parser.add_argument("--no-online", action="store_true", help="skip the online-impact run")
    parser.add_argument(
        "--online-only", action="store_true", help="run only the online-impact scenarios"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="skip the online-impact runs pinned to CPUs"
    )
    parser.add_argument(
        "--online-rounds",
        type=int,
        default=3,
        help="interleaved rounds of the online-impact scenarios (medians)",
    )
    parser.add_argument("--only", nargs="+", metavar="STRATEGY", help="run just these (no ratios)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    vendor = connection.vendor
    rows = args.rows or (1_000_000 if vendor == "postgresql" else 200_000)
    if args.json is None:
        args.json = str(ROOT / ("bench-online.json" if args.online_only else "bench-results.json"))
    if args.child:
        child(args.child, rows)
        return

    slow = min(rows, args.slow_cap)
    plan = [
        ("ceiling", rows),
        ("seed-save-loop", min(rows, args.save_cap)),
        ("seed-bulk-update", slow),
        ("seed-offset", max(CHUNK, slow // 10)),
        ("seed-offset", slow),
        ("hand-keyset-values", rows),
        ("hand-keyset-set", rows),
        ("ours-set-fixed", rows),
        ("ours-set-adaptive", rows),
        ("ours-set-0.4s", rows),
        ("ours-row-fixed", max(CHUNK, rows // 10)),
        ("ours-row-fixed", rows),
        ("ours-row-adaptive", rows),
        ("ours-records-fixed", rows),
        ("ours-records-adaptive", rows),
        ("ours-records-prefetch", rows),
        ("floor-read-compute", rows),
        ("ours-free-form-bulk-update", slow),
    ]
    if args.only or args.online_only:
        plan = [(name, n) for name, n in plan if name in (args.only or ())]
    print(f"django-backfills bench: {vendor}, {rows:,} rows, {args.repeat} run(s) each")
    print("generating data ...", flush=True)
    generate(rows)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    failures = []
    for strategy, n in plan:
        runs, verdict = [], (True, "ok")
        for _ in range(args.repeat):
            reset()
            runs.append(run_child(strategy, n))
            verdict = verify(0 if strategy.startswith("floor") else n)
            if not verdict[0]:
                break
        seconds = statistics.median(r["seconds"] for r in runs)
        durations = [d for r in runs for d in r["durations"]]
        result = {
            "strategy": strategy,
            "rows": n,
            "runs": len(runs),
            "seconds": seconds,
            "rows_per_s": n / seconds,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "chunk_p50_ms": 1000 * percentile(durations, 50),
            "chunk_p99_ms": 1000 * percentile(durations, 99),
            "chunk_max_ms": 1000 * max(durations) if durations else float("nan"),
            "verified": verdict[0],
            "verification": verdict[1],
        }
        results[(strategy, n)] = result
        if not verdict[0] and strategy.startswith("ours"):
            failures.append(f"{strategy}: {verdict[1]}")
        print(
            f"  {strategy:<28} {n:>10,} rows {result['rows_per_s']:>12,.0f} rows/s "
            f"{seconds:>8.2f}s  {verdict[1]}",
            flush=True,
        )

    if args.online_only:
        online = print_online_impact(args, rows)
        Path(args.json).write_text(
            json.dumps({"vendor": vendor, "rows": rows, "online_impact": online}, indent=2)
        )
        print(f"\nresults written to {args.json}")
        return
    if args.only:
        return

    # Checkpoint overhead is a few percent, less than the drift between strategies run minutes
    # apart: measure it in alternating pairs and take the median of the pairs' ratios.
    small = max(CHUNK, rows // 10)
    pair_ratios, checkpoint_shares = [], []
    for pair in range(max(5, args.repeat)):
        seconds = {}
        order = ["ours-records-fixed", "ours-records-no-checkpoint"]
        for strategy in order if pair % 2 == 0 else order[::-1]:
            reset()
            out = run_child(strategy, small)
            seconds[strategy] = out["seconds"]
            if strategy == "ours-records-fixed":
                checkpoint_shares.append(out["checkpoint_seconds"] / out["seconds"])
            ok, verdict = verify(small)
            if not ok:
                failures.append(f"{strategy}: {verdict}")
        pair_ratios.append(
            seconds["ours-records-fixed"] / seconds["ours-records-no-checkpoint"] - 1
        )
    print(
        f"  checkpoint overhead, {len(pair_ratios)} alternating pairs at {small:,} rows: "
        + ", ".join(f"{r:+.1%}" for r in pair_ratios)
        + "; checkpoint statements' share of the run: "
        + ", ".join(f"{r:.1%}" for r in checkpoint_shares),
        flush=True,
    )

    def rate(name: str, n: int | None = None) -> float:
        matches = [r for (s, k), r in results.items() if s == name and (n is None or k == n)]
        return max(matches, key=lambda r: r["rows"])["rows_per_s"]

    def per_row(name: str, n: int) -> float:
        return results[(name, n)]["seconds"] / n

    small_offset = max(CHUNK, slow // 10)
    serial = "ours-records-adaptive"
    ahead = "ours-records-prefetch"
    # The best a Python row backfill doing one thing at a time can do here: the server's work
    # to write every row (taken as the single statement's) plus reading the rows and computing
    # the values. Prefetching overlaps the two, so only the larger of them bounds it.
    set_04_max_ms = results[("ours-set-0.4s", rows)]["chunk_max_ms"]
    bound = rows / (
        results[("ceiling", rows)]["seconds"] + results[("floor-read-compute", rows)]["seconds"]
    )
    ratios = [
        (
            "ours-set-based, defaults (0.2 s chunks) / ceiling",
            rate("ours-set-adaptive") / rate("ceiling"),
            ">= 0.95 (PostgreSQL)",
        ),
        (
            "  hand-keyset-set (20,000-row UPDATE chunks, no runner) / ceiling",
            rate("hand-keyset-set") / rate("ceiling"),
            "(what keyset chunks cost)",
        ),
        (
            "ours-set-based, --target-chunk-time 0.4 / ceiling",
            rate("ours-set-0.4s") / rate("ceiling"),
            f">= 0.95, chunks <= 500 ms (max {set_04_max_ms:.0f})",
        ),
        (
            f"ours-row ({serial}) / seed-bulk-update",
            rate(serial) / rate("seed-bulk-update"),
            ">= 10",
        ),
        (
            f"ours-row ({ahead}) / seed-bulk-update",
            rate(ahead) / rate("seed-bulk-update"),
            ">= 10",
        ),
        (
            "  serial bound (ceiling + floor-read-compute) / seed-bulk-update",
            bound / rate("seed-bulk-update"),
            "(one thing at a time)",
        ),
        (f"ours-row ({serial}) / seed-save-loop", rate(serial) / rate("seed-save-loop"), ">= 40"),
        (f"ours-row ({ahead}) / seed-save-loop", rate(ahead) / rate("seed-save-loop"), ">= 40"),
        (
            "  serial bound (ceiling + floor-read-compute) / seed-save-loop",
            bound / rate("seed-save-loop"),
            "(one thing at a time)",
        ),
        (f"ours-row ({serial}) / serial bound", rate(serial) / bound, "(<= 1)"),
        (f"ours-row ({ahead}) / ceiling", rate(ahead) / rate("ceiling"), "(the single UPDATE)"),
        (
            "ours-row with instances (best of fixed, adaptive) / hand-keyset-values",
            max(rate("ours-row-fixed", rows), rate("ours-row-adaptive"))
            / rate("hand-keyset-values"),
            ">= 0.9",
        ),
        (
            "ours-row with read_fields records / hand-keyset-values (instances)",
            max(rate("ours-records-fixed"), rate("ours-records-adaptive"))
            / rate("hand-keyset-values"),
            "",
        ),
        (
            "checkpoint overhead (median of pairs, records fixed/no-checkpoint - 1)",
            statistics.median(pair_ratios),
            "<= 0.03",
        ),
        (
            "checkpoint statements' share of run time (median, timed in the runner)",
            statistics.median(checkpoint_shares),
            "<= 0.03",
        ),
        (
            f"ours-row per-row cost at {rows:,} / at {small:,}",
            per_row("ours-row-fixed", rows) / per_row("ours-row-fixed", small),
            "<= 1.2",
        ),
        (
            f"seed-offset per-row cost at {slow:,} / at {small_offset:,}",
            per_row("seed-offset", slow) / per_row("seed-offset", small_offset),
            "(grows)",
        ),
        (
            f"ours-row peak RSS growth {small:,} -> {rows:,} rows (MB)",
            results[("ours-row-fixed", rows)]["peak_rss_mb"]
            - results[("ours-row-fixed", small)]["peak_rss_mb"],
            "< 10",
        ),
    ]

    print()
    header = (
        f"{'strategy':<28} {'rows':>10} {'rows/s':>10} {'seconds':>8} {'peak MB':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  verified"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        print(
            f"{r['strategy']:<28} {r['rows']:>10,} {r['rows_per_s']:>10,.0f} {r['seconds']:>8.2f} "
            f"{r['peak_rss_mb']:>8.1f} {r['chunk_p50_ms']:>8.1f} {r['chunk_p99_ms']:>8.1f} "
            f"{r['chunk_max_ms']:>8.1f}  {r['verification']}"
        )
    print()
    print(f"{'ratio':<72} {'measured':>9}  target")
    for label, value, target in ratios:
        print(f"{label:<72} {value:>9.3f}  {target}")

    online = [] if args.no_online else print_online_impact(args, rows)

    Path(args.json).write_text(
        json.dumps(
            {
                "vendor": vendor,
                "rows": rows,
                "repeat": args.repeat,
                "results": list(results.values()),
                "ratios": [{"ratio": a, "measured": b, "target": c} for a, b, c in ratios],
                "online_impact": online,
            },
            indent=2,
        )
    )
    print(f"\nresults written to {args.json}")
    if failures:
        print("FAILED verification: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
