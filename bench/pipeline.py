"""``make bench``: crawl throughput with and without the pipeline, store step alone, peak RSS
(of the crawl and, summed, of the crawl with its store worker).

One local server (127.0.0.1) serves ~200 feeds × 100 entries (bench/genfeeds.py); each
crawl is a ``scrapy crawl feed`` subprocess (what Scrapyd runs) against a fresh embedded
PostgreSQL (or a scratch database on HARVEST_DATABASE_URL):

  (a) the feed spider with no item pipelines: the ceiling
  (b) the full pipeline: validate → dedupe → score → batched store (its store worker
      process does the database work)
  (c) validate → dedupe → score → per-item INSERT + commit (bench/naive_store.py)
  (d) validate → dedupe → score → rows built, not written: the pipeline without the database

then the store step alone on 100,000 items: batched COPY/upsert vs per-item INSERT + commit,
once with one body text under titles that differ (the worst case for clustering: a single
giant cluster) and once with a distinct generated text per item.
Figures go to stdout and bench/out/results.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# genfeeds' prose and headline makers: the distinct store-alone texts are like the feeds'.
from genfeeds import Prose, _title, generate  # noqa: E402
from scrapy.utils.project import get_project_settings  # noqa: E402

from harvester.parsers.html import html_to_text  # noqa: E402
from harvester.pipelines.validate import clean_text  # noqa: E402
from harvester.services import clusters, database, embedded  # noqa: E402
from harvester.services.batch import Batch  # noqa: E402
from harvester.services.localsite import LocalSite  # noqa: E402
from harvester.services.store import write_batch  # noqa: E402
from harvester.services.store_worker import Config, Outcome, StoreWorker  # noqa: E402

PIPELINES = {
    "validate": "harvester.pipelines.validate.ValidatePipeline",
    "dedupe": "harvester.pipelines.dedupe.DedupePipeline",
    "score": "harvester.pipelines.score.ScorePipeline",
    "store": "harvester.pipelines.store.StorePipeline",
}
NAIVE = "naive_store.NaiveInsertPipeline"
DISCARD = "naive_store.DiscardRowsPipeline"
# The project's extensions plus the one that records the stats: every run gets the same.
# Named explicitly: found through scrapy.cfg, they would be lost when the bench is run
# from another directory (its crawls then ran without GcFreezeExtension).
os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "harvester.settings")
EXTENSIONS = {**get_project_settings().getdict("EXTENSIONS"), "bench_stats.StatsToFile": 0}
IN_FLIGHT = 4  # HARVEST_STORE_MAX_IN_FLIGHT's default
TABLES = "signals, rejects, crawl_runs, sources_state, applied_batches, cluster_sources"


def pipelines(*names: str) -> str:
    order = {n: 100 * (i + 1) for i, n in enumerate(names)}
    return json.dumps({PIPELINES.get(n, n): prio for n, prio in order.items()})


class TreeRss:
    """Peak of the summed RSS of a process and its children (the crawl and its store
    worker), sampled every 50 ms: ``wait4`` only gives the largest single process."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._pid = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.wait(0.05):
            total = 0
            try:
                for process in (root, *root.children(recursive=True)):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def crawl(label: str, item_pipelines: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    stats_file = cwd / f"stats-{label}.json"
    cmd = [
        sys.executable, "-m", "scrapy", "crawl", "feed", "-a", "source=bench",
        "-s", f"ITEM_PIPELINES={item_pipelines}",
        "-s", "AUTOTHROTTLE_ENABLED=False",
        "-s", "CONCURRENT_REQUESTS=16", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
        "-s", "HARVEST_CONDITIONAL_ENABLED=False",
        "-s", "LOG_LEVEL=WARNING",
        "-s", f"EXTENSIONS={json.dumps(EXTENSIONS)}",
        "-s", f"BENCH_STATS_FILE={stats_file}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(cwd / f"log-{label}.txt", "w"))  # noqa: SIM115
    tree = TreeRss(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    tree.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"crawl {label} failed; see {cwd / f'log-{label}.txt'}")
    stats = json.loads(stats_file.read_text())
    elapsed = stats["elapsed_time_seconds"]
    items = stats.get("item_scraped_count", 0)
    return {
        "label": label, "items": items, "seconds": round(elapsed, 2),
        "items_per_s": round(items / elapsed, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_tree_rss_mb": round(tree.peak / 2**20, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "responses": stats.get("downloader/response_count", 0),
        "marks": stats.get("bench_marks", {}),
        # Batches, spool files, worker restarts: what to look at when a run is an outlier.
        "store": {k.removeprefix("harvest/store/"): v for k, v in stats.items()
                  if k.startswith("harvest/store/")},
    }


def median_run(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (a real run, not a blend of several)."""
    ordered = sorted(measured, key=lambda m: m["items_per_s"])
    return ordered[len(ordered) // 2]


def rows(n: int, run_id: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
    return [
        {
            "key": f"u:{uuid.uuid4().hex}", "source": "bench", "kind": "feed",
            "url": f"https://example.org/a/{i}", "canonical_url": f"https://example.org/a/{i}",
            "external_id": None, "title": f"Item {i} about open source", "text": body,
            "author": "bench", "published_at": now, "updated_at": None, "fetched_at": now,
            "language": None, "tags": ["bench"], "engagement": {}, "score": 12.5,
            "score_breakdown": {"points": 1}, "run_id": run_id,
        }
        for i in range(n)
    ]


def distinct_rows(n: int, run_id: str, seed: int = 1) -> list[dict[str, Any]]:
    """:func:`rows` with a text of its own per row (1-3 KB of generated prose, reduced to
    text as the feed parser and validate do: the store never gets HTML, and gets a plain
    ``str``, not the parser's ``TidyText``): nearly all of them start their own cluster."""
    rng = random.Random(seed)
    prose = Prose(rng)
    data = rows(n, run_id)
    for row in data:
        row["title"] = _title(rng)
        row["text"] = clean_text(html_to_text(prose.html(rng, "bench.example")), 20_000)
    return data


async def store_batched(url: str, data: list[dict[str, Any]], batch_size: int) -> float:
    """The store step as a crawl runs it: batches handed to a store worker process, at most
    ``HARVEST_STORE_MAX_IN_FLIGHT`` (4) under way, each acknowledged before it counts."""
    worker = StoreWorker(Config(url, connect_timeout=5, reconnect_seconds=10.0,
                                cluster_distance=clusters.DEFAULT_DISTANCE))
    await worker.start()
    try:
        in_flight: deque[asyncio.Task[Outcome]] = deque()
        start = time.perf_counter()
        for i in range(0, len(data), batch_size):
            if len(in_flight) == IN_FLIGHT:
                _stored(await in_flight.popleft())
            in_flight.append(asyncio.create_task(
                worker.write(Batch(signals=data[i:i + batch_size]))))
        for task in in_flight:
            _stored(await task)
        return time.perf_counter() - start
    finally:
        await worker.close()


async def store_in_process(url: str, data: list[dict[str, Any]], batch_size: int) -> float:
    """``write_batch`` one batch after the other on one connection: the store step without
    its worker's read-ahead (the figure of sessions 1-6)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        start = time.perf_counter()
        for i in range(0, len(data), batch_size):
            await write_batch(conn, Batch(signals=data[i:i + batch_size]))
        return time.perf_counter() - start


def _stored(outcome: Outcome) -> None:
    if outcome.status != "stored":
        raise SystemExit(f"the store worker did not store a batch: {outcome}")


def store_naive(url: str, data: list[dict[str, Any]]) -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    from naive_store import INSERT

    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        for r in data:
            conn.execute(INSERT, (
                r["key"], r["source"], r["kind"], r["url"], r["canonical_url"],
                r["external_id"], r["title"], r["text"], r["author"], r["published_at"],
                r["updated_at"], r["fetched_at"], r["language"], r["tags"],
                json.dumps(r["engagement"]), r["score"], json.dumps(r["score_breakdown"]),
            ))
            conn.commit()
        return time.perf_counter() - start


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--store-items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="crawl rounds (median is kept)")
    args = parser.parse_args()
    results = in_scratch("harvest-bench-", lambda work: run(work, args), "results.json")
    print(json.dumps(results, indent=2))


def in_scratch(prefix: str, body: Callable[[Path], dict[str, Any]],
               out_name: str) -> dict[str, Any]:
    """``body`` run in a scratch directory (its embedded PostgreSQL stopped and the
    directory removed after), its results written to bench/out/``out_name``."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        results = body(work)
    finally:
        embedded.stop(work / "pg", mode="fast")
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / out_name).write_text(json.dumps(results, indent=2))
    return results


def corpus_and_database(work: Path, feeds: int, entries: int) -> tuple[Path, list[str], str]:
    """The generated feeds (their root and paths) and a migrated database URL."""
    site_root = work / "site"
    paths = generate(site_root, feeds=feeds, entries=entries)
    (site_root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    url = os.environ.get("HARVEST_DATABASE_URL") or embedded.start(work / "pg")
    database.migrate(url)
    return site_root, paths, url


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    site_root, paths, url = corpus_and_database(work, args.feeds, args.entries)
    results: dict[str, Any] = {"feeds": args.feeds, "entries_per_feed": args.entries}
    with LocalSite(site_root) as site:
        env = crawl_env(work, site.url, paths, url)
        warm_up(site.url, paths)
        every: dict[str, list[dict[str, Any]]] = {}
        # Interleaved rounds, median per run: this machine's noise is ±15 % per crawl.
        for _ in range(args.rounds):
            for label, pipes in (
                ("a_no_pipelines", "{}"),
                ("b_full_pipeline", pipelines("validate", "dedupe", "score", "store")),
                ("c_per_item_insert", pipelines("validate", "dedupe", "score", NAIVE)),
                ("d_no_db_write", pipelines("validate", "dedupe", "score", DISCARD)),
            ):
                truncate(url)
                every.setdefault(label, []).append(crawl(label, pipes, env, work))
                print(every[label][-1], flush=True)
        runs = {label: median_run(measured) for label, measured in every.items()}
        results["crawls"] = runs
        results["items_per_s_every_round"] = {
            label: [m["items_per_s"] for m in measured] for label, measured in every.items()
        }
    a, b, c = (runs[k]["items_per_s"] for k in ("a_no_pipelines", "b_full_pipeline",
                                                "c_per_item_insert"))
    results["ratio_b_over_a"] = round(b / a, 3)
    results["ratio_c_over_a"] = round(c / a, 3)
    results["ratio_d_over_a"] = round(runs["d_no_db_write"]["items_per_s"] / a, 3)
    # Each (b) against the (a) of its own round (the machine's load drifts between rounds).
    per_round = [b_i["items_per_s"] / a_i["items_per_s"] for a_i, b_i in zip(
        every["a_no_pipelines"], every["b_full_pipeline"], strict=True)]
    results["ratio_b_over_a_per_round"] = [round(r, 3) for r in per_round]
    # Less moved by a slow spell than the ratio of medians, whose (a) and (b) may come from
    # different rounds; reported beside it, not instead of it.
    results["ratio_b_over_a_per_round_median"] = round(statistics.median(per_round), 3)
    # The same rounds as time an item: what (b) costs beyond (a), against the ≈ 1/4 of (a)'s
    # time an item that 0.8 allows (the ratio alone hides that (a) moves and (b) does not).
    extra = [1e6 / b_i["items_per_s"] - 1e6 / a_i["items_per_s"] for a_i, b_i in zip(
        every["a_no_pipelines"], every["b_full_pipeline"], strict=True)]
    results["extra_us_per_item_b_over_a_per_round"] = [round(e, 1) for e in extra]
    results["extra_us_per_item_b_over_a_per_round_median"] = round(statistics.median(extra), 1)
    results["us_per_item_a_per_round"] = [round(1e6 / a_i["items_per_s"], 1)
                                          for a_i in every["a_no_pipelines"]]

    run_id = str(uuid.uuid4())
    server = None if os.environ.get("HARVEST_DATABASE_URL") else embedded.status(work / "pg").pid
    results["store_alone"] = store_alone(url, rows(args.store_items, run_id), args.batch_size,
                                         server)
    results["store_alone_distinct"] = store_alone(
        url, distinct_rows(args.store_items, run_id), args.batch_size, server)
    return results


def crawl_env(work: Path, base: str, paths: list[str], url: str) -> dict[str, str]:
    """The environment of a bench crawl: a sources file with one feed source of every
    path under ``base`` and two topics, the database at ``url``, state under ``work``."""
    sources = work / "sources.toml"
    urls = ", ".join(f'"{base}/{p}"' for p in paths)
    sources.write_text(
        f'[[sources]]\nname = "bench"\nkind = "feed"\nurls = [{urls}]\n\n'
        '[topics.security]\nkeywords = ["ransomware", "vulnerability", "zero-day"]\n'
        'weight = 2.0\n\n[topics.oss]\nkeywords = ["open source", "release"]\nweight = 1.0\n'
    )
    return {**os.environ, "HARVEST_DATABASE_URL": url, "HARVEST_HOME": str(work / "home"),
            "HARVEST_SOURCES": str(sources),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])}


def warm_up(base: str, paths: list[str]) -> None:
    """Fetch every feed once as the crawls do (gzip): the server compresses a file on its
    first request (≈ 2.5 CPU s for all of them), which would otherwise fall on round 1 of (a)."""
    for path in paths:
        request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def server_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of PostgreSQL so far: its postmaster, the children it has reaped
    (backends of closed connections) and those still running; None for a server elsewhere."""
    if pid is None:
        return None
    postmaster = psutil.Process(pid)
    own = postmaster.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def machine_ticks() -> tuple[int, int]:
    """All and idle (idle + iowait) CPU ticks of the machine so far (``/proc/stat``)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def store_alone(url: str, data: list[dict[str, Any]], batch_size: int,
                server: int | None = None) -> dict[str, Any]:
    """The store step alone into an empty table: batched (through the store worker, and
    in-process) vs per-item INSERT. For the run through the worker, the CPU a row of the
    worker (this process's reaped child) and of PostgreSQL (``server``: the embedded
    server's pid), and how busy the machine's CPUs were over the run."""
    truncate(url)
    worker_before, server_before = os.times(), server_cpu_seconds(server)
    ticks_before = machine_ticks()
    batched = asyncio.run(store_batched(url, data, batch_size))  # pickled: rows untouched
    ticks_after = machine_ticks()
    time.sleep(0.2)  # for the postmaster to reap the worker's backends
    worker_after, server_after = os.times(), server_cpu_seconds(server)
    worker_cpu = (worker_after.children_user + worker_after.children_system
                  - worker_before.children_user - worker_before.children_system)
    all_ticks, idle_ticks = (a - b for a, b in zip(ticks_after, ticks_before, strict=True))
    truncate(url)
    # write_batch sets each row's simhash: a copy, so the next run fingerprints too.
    in_process = asyncio.run(store_in_process(url, copy.deepcopy(data), batch_size))
    truncate(url)
    naive = store_naive(url, data)
    return {
        "items": len(data),
        "batched_items_per_s": round(len(data) / batched, 1),
        "in_process_items_per_s": round(len(data) / in_process, 1),
        "per_item_insert_items_per_s": round(len(data) / naive, 1),
        "ratio": round(naive / batched, 2),
        "ratio_in_process": round(naive / in_process, 2),
        "batched_cpu_us_per_item": {
            "worker": round(worker_cpu / len(data) * 1e6, 1),
            "postgres": None if server_after is None or server_before is None
            else round((server_after - server_before) / len(data) * 1e6, 1),
        },
        "batched_cpus_busy": round(1 - idle_ticks / all_ticks, 3) if all_ticks else None,
    }


if __name__ == "__main__":
    main()
