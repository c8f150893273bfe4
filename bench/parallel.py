#!/usr/bin/env python
"""`make bench BENCH_ARGS="--parallel ..."`: parallel runs (`run --workers N`) against the ways
people spread a backfill over processes or threads, side by side in one run.

Scenarios (PostgreSQL or MariaDB/MySQL; SQLite has one writer, so it is skipped):

* latency: the transform waits LATENCY ms per row (an external call). Ours with 1/2/4/8
  workers against our serial runner, the seed's ThreadPoolExecutor(4) over a list of every id
  (no checkpoint), and ``id % N`` sharding as Shopify's job-iteration does it (N processes
  each walking the whole primary key, keeping the rows where id % N == k). Target: N workers
  >= 0.8 x N times one worker.
* cpu: a CPU-bound transform, 2 workers against 1 (target >= 1.5x on 2 cores).
* set-based and online impact: an UpdateBackfill with 1/2/4 workers and the row backfill
  with 1/2/4 workers while an application writer updates random rows (bench/run.py's
  Writer); the single UPDATE is the set-based ceiling (target: 2 workers >= 1.0x of it).
* claim overhead: chunks per second of an empty transform with small chunks, 1 and 8
  workers.

Every worker process is started and connected before the clock starts (a ``ready`` line),
so the times are the work, not Python's start-up. Rounds are interleaved (each round runs
every strategy once) and the table shows medians. After every run the data is verified:
every row has the right value and was written exactly once (the run's processed count, or
the baselines' own counts, equal the table's rows).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test make bench BENCH_ARGS="--parallel"
    DATABASE_URL=mysql://root@127.0.0.1:3306/test make bench EXTRAS=test,mysql \\
        BENCH_ARGS="--parallel --rows 5000 --set-rows 20000 --repeat 1"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (sets Django up on DATABASE_URL's database)
from django.db import OperationalError, connection, connections, transaction  # noqa: E402
from django.db.models import F, Max  # noqa: E402
from django.db.models.functions import Mod  # noqa: E402
from django.utils.text import slugify  # noqa: E402

from backfills import Backfill, Parameter, RowBackfill  # noqa: E402
from backfills.engine.options import RunOptions  # noqa: E402
from backfills.engine.parallel import start_parallel  # noqa: E402
from backfills.engine.runner import Runner  # noqa: E402
from backfills.engine.workers import run_worker  # noqa: E402
from backfills.models import BackfillRun  # noqa: E402
from backfills.registry import registry  # noqa: E402
from blog.models import Post  # noqa: E402

HERE = Path(__file__).resolve()
WORKERS = [1, 2, 4, 8]
SHARD_BATCH = 100  # job-iteration's default batch of records


def burn(loops: int) -> int:
    """CPU work standing in for an expensive transform (parsing, hashing, rendering)."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def wait_and_slug(title: str, latency_ms: float, cpu_loops: int) -> str:
    if latency_ms > 0:
        time.sleep(latency_ms / 1000)
    if cpu_loops:
        burn(cpu_loops)
    return slugify(title)


class SlowRow(RowBackfill):
    """The bench's row backfill: slug from title, after an external call and/or CPU work."""

    model = "blog.Post"
    name = "bench.parallel_row"
    fields = ["slug"]
    read_fields = ["title"]
    parameters = {
        "latency_ms": Parameter(float, default=0.0),
        "cpu_loops": Parameter(int, default=0),
    }

    def get_queryset(self) -> Any:
        return Post.objects.filter(slug__isnull=True)

    def transform(self, row: Any) -> None:
        row.slug = wait_and_slug(row.title, self.params.latency_ms, self.params.cpu_loops)


class Empty(Backfill):
    """Reads each chunk and writes nothing: what a chunk costs besides the work."""

    model = "blog.Post"
    name = "bench.parallel_empty"

    def process_chunk(self, rows: list[Any]) -> None:
        pass


for _cls in (SlowRow, Empty):
    if _cls.name not in registry:
        registry.register(_cls)


# -- processes --------------------------------------------------------------------------------


def spawn(role: list[str]) -> subprocess.Popen[str]:
    """A child of this script that sets Django up, connects, says ``ready`` and waits for
    one line on stdin before working (so start-up is not timed)."""
    child = subprocess.Popen(
        [sys.executable, str(HERE), "--proc", *role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        raise RuntimeError(f"{role}: expected 'ready', got {line!r}")
    return child


def go(children: list[subprocess.Popen[str]], line: str) -> list[dict[str, Any]]:
    for child in children:
        assert child.stdin is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()
    outs = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"child pid {child.pid} exited with {child.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def proc_main(role: list[str]) -> None:
    """The child side of ``spawn``."""
    connection.ensure_connection()
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    started = time.perf_counter()
    if role[0] == "worker":
        result = run_worker(run_ids=[int(line)], idle_poll=0.2)
        out: dict[str, Any] = {"chunks": result.chunks, "rows": result.rows}
    elif role[0] == "shard":
        k, n, latency_ms, cpu_loops = int(role[1]), int(role[2]), float(role[3]), int(role[4])
        out = {"rows": shard(k, n, latency_ms, cpu_loops)}
    elif role[0] == "threads":
        out = {"rows": thread_pool(int(role[1]), float(role[2]), int(role[3]))}
    else:
        raise SystemExit(f"unknown role {role}")
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)
    connections.close_all()
    # Skip the interpreter's teardown (about 0.2 s a process here, seconds for eight at once
    # on two cores): the work is committed, and the clock is waiting on this exit.
    os._exit(0)


# -- baselines (in the children) --------------------------------------------------------------


def shard(k: int, n: int, latency_ms: float, cpu_loops: int) -> int:
    """job-iteration's way to use N processes: each walks the whole primary key in batches,
    keeping the rows where id % N == k; each batch is written in one statement (the same
    UPDATE ... FROM VALUES as bench/run.py's hand-written loop), its own transaction."""
    done, last = 0, 0
    mine = Post.objects.annotate(shard=Mod(F("id"), n)).filter(shard=k, slug__isnull=True)
    while True:
        batch = list(mine.filter(pk__gt=last).order_by("pk").only("pk", "title")[:SHARD_BATCH])
        if not batch:
            return done
        for post in batch:
            post.slug = wait_and_slug(post.title, latency_ms, cpu_loops)
        for attempt in range(10):
            try:
                with transaction.atomic():
                    bench.hand_values_update(batch)
                break
            except OperationalError:
                # MariaDB: interleaved shards' joined UPDATEs take next-key locks on each
                # other's rows and deadlock now and then (seen in CI); retry as any job would.
                if attempt == 9:
                    raise
                time.sleep(0.01 * (attempt + 1))
        last, done = batch[-1].pk, done + len(batch)


def thread_pool(threads: int, latency_ms: float, cpu_loops: int) -> int:
    """The seed's way: every id loaded into a list, then a ThreadPoolExecutor saves each row
    (no chunks, no checkpoint: a crash starts over)."""
    ids = list(Post.objects.filter(slug__isnull=True).order_by("pk").values_list("pk", flat=True))

    def one(pk: int) -> int:
        post = Post.objects.only("pk", "title").get(pk=pk)
        post.slug = wait_and_slug(post.title, latency_ms, cpu_loops)
        post.save(update_fields=["slug"])
        return 1

    def close() -> int:
        connections.close_all()
        return 0

    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(one, ids))
        # Each thread's connection is its own; close them before the pool's threads end.
        list(pool.map(lambda _: close(), range(threads)))
    return done


# -- strategies (in the parent) ---------------------------------------------------------------


#: The application writer of the running strategy (online scenarios), and how many of its
#: writes came before the strategy's clock started: worker start-up is not part of the run.
WRITER: list[Any] = []
WRITER_FROM: list[int] = [0]


def clock() -> float:
    """Start a strategy's clock (and the window of the writer's latencies that count)."""
    WRITER_FROM[0] = len(WRITER[0].latencies) if WRITER else 0
    return time.perf_counter()


class Outcome(dict[str, Any]):
    """seconds, rows written (exactly-once check), chunks, peak RSS of the busiest process."""


def ours(name: str, workers: int, params: dict[str, Any], batch_size: int | None = None) -> Any:
    def strategy() -> Outcome:
        children = [spawn(["worker"]) for _ in range(workers)]
        started = clock()
        opened = start_parallel(
            registry.get(name),
            workers=workers,
            options=RunOptions(restart=True, parameters=params, batch_size=batch_size),
        )
        outs = go(children, str(opened.run.pk))
        seconds = time.perf_counter() - started
        run = BackfillRun.objects.get(pk=opened.run.pk)
        if run.state != BackfillRun.State.COMPLETED:
            raise RuntimeError(f"run #{run.pk} ended {run.state}: {run.last_error}")
        return Outcome(
            seconds=seconds,
            written=run.rows_processed,
            scanned=run.rows_scanned,
            chunks=sum(o["chunks"] for o in outs),
            peak_rss_mb=max(o["peak_rss_mb"] for o in outs),
            partitions=run.partitions.count(),
        )

    return strategy


def ours_serial(name: str, params: dict[str, Any], batch_size: int | None = None) -> Any:
    def strategy() -> Outcome:
        started = clock()
        options = RunOptions(restart=True, parameters=params, batch_size=batch_size)
        result = Runner(registry.get(name), options=options).run()
        seconds = time.perf_counter() - started
        return Outcome(
            seconds=seconds,
            written=result.run.rows_processed,
            scanned=result.run.rows_scanned,
            chunks=result.run.chunks_done,
        )

    return strategy


def shards(n: int, latency_ms: float, cpu_loops: int) -> Any:
    def strategy() -> Outcome:
        children = [
            spawn(["shard", str(k), str(n), str(latency_ms), str(cpu_loops)]) for k in range(n)
        ]
        started = clock()
        outs = go(children, "go")
        return Outcome(
            seconds=time.perf_counter() - started,
            written=sum(o["rows"] for o in outs),
            peak_rss_mb=max(o["peak_rss_mb"] for o in outs),
        )

    return strategy


def threads(n: int, latency_ms: float, cpu_loops: int) -> Any:
    def strategy() -> Outcome:
        children = [spawn(["threads", str(n), str(latency_ms), str(cpu_loops)])]
        started = clock()
        (out,) = go(children, "go")
        return Outcome(
            seconds=time.perf_counter() - started,
            written=out["rows"],
            peak_rss_mb=out["peak_rss_mb"],
        )

    return strategy


def single_update() -> Outcome:
    started = clock()
    with transaction.atomic():
        written = Post.objects.update(slug=bench.EXPECTED)
    return Outcome(seconds=time.perf_counter() - started, written=written)


def idle() -> Outcome:
    clock()
    time.sleep(5)
    return Outcome(seconds=5.0, written=0)


# -- measuring --------------------------------------------------------------------------------


def check(outcome: Outcome, rows: int, slugs: bool) -> str:
    """'ok', or what is wrong: a row without its value, or written more or less than once."""
    if slugs:
        ok, verdict = bench.verify(rows)
        if not ok:
            return verdict
    if outcome.get("written") is not None and outcome["written"] != rows:
        return f"{outcome['written']:,} rows written for {rows:,} (not exactly once)"
    if outcome.get("scanned") is not None and outcome["scanned"] != rows:
        return f"{outcome['scanned']:,} rows walked for {rows:,}"
    return "ok"


def measure(
    plan: list[tuple[str, Callable[[], Outcome], bool]],
    rows: int,
    repeat: int,
    writer: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each strategy of *plan* (label, strategy, writes slugs) once per round, rounds
    interleaved; medians per label. With *writer*, an application writer runs throughout
    each strategy (bench/run.py's Writer) and its latencies are kept."""
    max_pk = Post.objects.aggregate(m=Max("pk"))["m"]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in plan}
    for _ in range(repeat):
        for label, strategy, slugs in plan:
            bench.reset()
            app = bench.Writer(max_pk) if writer else None
            WRITER[:] = [app] if app is not None else []
            if app is not None:
                app.start()
                time.sleep(0.5)  # its connection open, its first writes done
            outcome = strategy()
            if app is not None:
                app.stop.set()
                app.join()
                if app.error is not None or not app.latencies:
                    raise RuntimeError(f"the writer failed during {label!r}") from app.error
                lat = app.latencies[WRITER_FROM[0] :]
                outcome.update(
                    writes=len(lat),
                    p50_ms=1000 * bench.percentile(lat, 50),
                    p99_ms=1000 * bench.percentile(lat, 99),
                    max_ms=1000 * max(lat),
                )
            expected = rows if outcome.get("written") else 0
            outcome["verified"] = check(outcome, expected, slugs and bool(expected))
            runs[label].append(outcome)
            rate = expected / outcome["seconds"] if expected else 0
            print(
                f"  {label:<34} {outcome['seconds']:>7.2f}s {rate:>10,.0f} rows/s  "
                f"{outcome['verified']}",
                flush=True,
            )
    results = {}
    for label, done in runs.items():
        seconds = statistics.median(o["seconds"] for o in done)
        written = done[0].get("written") or 0
        result: dict[str, Any] = {
            "strategy": label,
            "rows": written,
            "runs": len(done),
            "seconds": seconds,
            "seconds_rounds": [o["seconds"] for o in done],
            "rows_per_s": written / seconds if written else None,
            "verified": next((o["verified"] for o in done if o["verified"] != "ok"), "ok"),
        }
        if done[0].get("chunks") is not None:
            result["chunks"] = statistics.median(o["chunks"] for o in done)
            result["chunks_per_s"] = statistics.median(o["chunks"] / o["seconds"] for o in done)
        if done[0].get("partitions") is not None:
            result["partitions"] = statistics.median(o["partitions"] for o in done)
        if writer:
            result.update(
                writes=statistics.median(o["writes"] for o in done),
                p50_ms=statistics.median(o["p50_ms"] for o in done),
                p99_ms=statistics.median(o["p99_ms"] for o in done),
                max_ms=max(o["max_ms"] for o in done),
            )
        results[label] = result
    return results


# -- report -----------------------------------------------------------------------------------


def print_table(title: str, results: dict[str, dict[str, Any]], writer: bool = False) -> None:
    print(f"\n{title}")
    header = f"{'strategy':<34} {'rows':>8} {'rows/s':>9} {'seconds':>8} {'chunks':>7}"
    if writer:
        header += f" {'writes':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8}"
    print(header + "  verified")
    print("-" * (len(header) + 10))
    for r in results.values():
        rate = f"{r['rows_per_s']:>9,.0f}" if r["rows_per_s"] else f"{'':>9}"
        chunks = f"{r['chunks']:>7,.0f}" if "chunks" in r else f"{'':>7}"
        line = f"{r['strategy']:<34} {r['rows']:>8,} {rate} {r['seconds']:>8.2f} {chunks}"
        if writer:
            line += (
                f" {r['writes']:>7,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>8.1f}"
            )
        print(f"{line}  {r['verified']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=20_000, help="rows of the latency and CPU scenarios"
    )
    parser.add_argument(
        "--set-rows",
        type=int,
        help="rows of the set-based / online-impact scenarios (default 10 x --rows)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="the external call per row")
    parser.add_argument(
        "--cpu-loops", type=int, default=20_000, help="CPU work per row of the CPU scenario"
    )
    parser.add_argument(
        "--claim-batch", type=int, default=50, help="chunk size of the claim-overhead scenario"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["latency", "cpu", "online", "claim"],
        default=["latency", "cpu", "online", "claim"],
    )
    parser.add_argument("--proc", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", help="where to write the results (default bench-results-parallel.json)"
    )
    args = parser.parse_args(argv)
    if args.proc:
        proc_main(args.proc)
        return
    vendor = connection.vendor
    if vendor == "sqlite":
        print(
            "parallel bench: skipped, it needs PostgreSQL or MariaDB/MySQL (SQLite has one "
            "writer; --workers > 1 is refused there). Set DATABASE_URL."
        )
        return
    set_rows = args.set_rows or 10 * args.rows
    json_path = Path(args.json or bench.ROOT / "bench-results-parallel.json")
    print(
        f"django-backfills parallel bench: {vendor}, {args.rows:,} rows (set-based/online "
        f"{set_rows:,}), {args.repeat} interleaved round(s), {os.cpu_count()} CPUs"
    )
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    ratios: list[dict[str, Any]] = []
    failures: list[str] = []

    def ratio(label: str, value: float, target: float | None, note: str = "") -> None:
        met = None if target is None else value >= target
        ratios.append(
            {"ratio": label, "measured": value, "target": target, "met": met, "note": note}
        )

    def rate(table: str, label: str) -> float:
        value: float = tables[table][label]["rows_per_s"]
        return value

    if "latency" in args.only or "cpu" in args.only or "claim" in args.only:
        bench.generate(args.rows)
    if "latency" in args.only:
        lat = args.latency_ms
        params = {"latency_ms": lat}
        plan: list[tuple[str, Callable[[], Outcome], bool]] = [
            ("ours serial runner", ours_serial(SlowRow.name, params), True),
            *[(f"ours --workers {n}", ours(SlowRow.name, n, params), True) for n in WORKERS],
            ("seed ThreadPoolExecutor(4)", threads(4, lat, 0), True),
            *[(f"id % {n} sharding, {n} procs", shards(n, lat, 0), True) for n in WORKERS[1:]],
        ]
        print(f"\nlatency: the transform waits {lat:g} ms per row, {args.rows:,} rows", flush=True)
        tables["latency"] = measure(plan, args.rows, args.repeat)
        one = rate("latency", "ours --workers 1")
        for n in WORKERS[1:]:
            ratio(
                f"latency: ours {n} workers / ours 1 worker",
                rate("latency", f"ours --workers {n}") / one,
                0.8 * n,
            )
        ratio(
            "latency: ours 1 worker / ours serial runner",
            one / rate("latency", "ours serial runner"),
            None,
        )
        ratio(
            "latency: ours 4 workers / seed ThreadPoolExecutor(4)",
            rate("latency", "ours --workers 4") / rate("latency", "seed ThreadPoolExecutor(4)"),
            None,
        )
        for n in WORKERS[1:]:
            ratio(
                f"latency: ours {n} workers / id % {n} sharding",
                rate("latency", f"ours --workers {n}")
                / rate("latency", f"id % {n} sharding, {n} procs"),
                None,
            )
    if "cpu" in args.only:
        params = {"cpu_loops": args.cpu_loops}
        plan = [
            ("ours serial runner", ours_serial(SlowRow.name, params), True),
            ("ours --workers 1", ours(SlowRow.name, 1, params), True),
            ("ours --workers 2", ours(SlowRow.name, 2, params), True),
            ("id % 2 sharding, 2 procs", shards(2, 0.0, args.cpu_loops), True),
        ]
        print(f"\ncpu: the transform computes ({args.cpu_loops:,} loops) per row", flush=True)
        tables["cpu"] = measure(plan, args.rows, args.repeat)
        ratio(
            "cpu: ours 2 workers / ours 1 worker",
            rate("cpu", "ours --workers 2") / rate("cpu", "ours --workers 1"),
            1.5,
            f"{os.cpu_count()} CPUs shared with the database server",
        )
    if "claim" in args.only:
        plan = [
            (
                f"ours serial runner, empty, {args.claim_batch}-row chunks",
                ours_serial(Empty.name, {}, batch_size=args.claim_batch),
                False,
            ),
            *[
                (
                    f"ours --workers {n}, empty, {args.claim_batch}-row chunks",
                    ours(Empty.name, n, {}, batch_size=args.claim_batch),
                    False,
                )
                for n in (1, 2, 8)
            ],
        ]
        print("\nclaim overhead: an empty transform in small chunks", flush=True)
        tables["claim"] = measure(plan, args.rows, args.repeat)
        for label, r in tables["claim"].items():
            ratio(f"claim: chunks/s, {label.split(',')[0]}", r["chunks_per_s"], None, "report")
    if "online" in args.only:
        bench.generate(set_rows)
        row_params = {"latency_ms": 0.0}
        plan = [
            ("idle (writer alone)", idle, False),
            ("single UPDATE (ceiling)", single_update, True),
            *[
                (f"set-based --workers {n}", ours(bench.SetBased.name, n, {}), True)
                for n in (1, 2, 4)
            ],
            *[(f"row --workers {n}", ours(SlowRow.name, n, row_params), True) for n in (1, 2, 4)],
        ]
        print(
            f"\nset-based and online impact: {set_rows:,} rows while a writer updates random "
            "rows one at a time, 2 ms apart",
            flush=True,
        )
        tables["online"] = measure(plan, set_rows, args.repeat, writer=True)
        ratio(
            "set-based: ours 2 workers / single UPDATE, online",
            rate("online", "set-based --workers 2") / rate("online", "single UPDATE (ceiling)"),
            1.0,
            "writer max wait: "
            f"ours {tables['online']['set-based --workers 2']['max_ms']:.0f} ms, "
            f"single UPDATE {tables['online']['single UPDATE (ceiling)']['max_ms']:.0f} ms",
        )
        idle_p99 = tables["online"]["idle (writer alone)"]["p99_ms"]
        for n in (2, 4):
            for kind in ("set-based", "row"):
                r = tables["online"][f"{kind} --workers {n}"]
                ratio(
                    f"online: writer p99 / idle, {kind} {n} workers",
                    r["p99_ms"] / idle_p99,
                    None,
                    f"max {r['max_ms']:.0f} ms",
                )

    titles = {
        "latency": f"latency ({args.latency_ms:g} ms per row), {args.rows:,} rows",
        "cpu": f"CPU-bound transform ({args.cpu_loops:,} loops per row), {args.rows:,} rows",
        "claim": f"claim overhead (empty, {args.claim_batch}-row chunks), {args.rows:,} rows",
        "online": f"set-based and online impact (writer latency), {set_rows:,} rows",
    }
    for name, results in tables.items():
        print_table(
            f"{titles[name]}; medians of {args.repeat} round(s)", results, writer=name == "online"
        )
        failures += [
            f"{name}: {r['strategy']}: {r['verified']}"
            for r in results.values()
            if r["verified"] != "ok"
        ]
    print(f"\n{'ratio':<58} {'measured':>9} {'target':>7}  met")
    for r in ratios:
        target = f"{r['target']:>7.2f}" if r["target"] is not None else f"{'':>7}"
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        print(f"{r['ratio']:<58} {r['measured']:>9.2f} {target}  {met:<3} {r['note']}")
    json_path.write_text(
        json.dumps(
            {
                "vendor": vendor,
                "rows": args.rows,
                "set_rows": set_rows,
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "tables": {name: list(results.values()) for name, results in tables.items()},
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"\nresults written to {json_path}")
    if failures:
        print("FAILED verification: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
