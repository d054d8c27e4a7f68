"""The store worker process: killed mid-crawl, its batches are spooled, then land exactly once;
it exits with its crawl, stalls the crawl rather than fill memory, is shared by a process's
crawlers, and stores batches in flight in order, clustered across batches."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from scrapy.settings import Settings

from harvester.pipelines.store import StoreConfig
from harvester.services import clusters
from harvester.services.batch import Batch
from harvester.services.localsite import LocalSite
from harvester.services.store_worker import Config, Outcome, StoreWorker, _frame
from tests.conftest import ROOT, wait_for, write_sources
from tests.feeds import items, rss
from tests.test_store_clusters import OTHER, STORY, SYNDICATED
from tests.test_store_clusters import row as cluster_row

FEEDS, PER_FEED = 40, 20
WORKER = "harvester.services.store_worker"


def workers_of(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if WORKER in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited meanwhile (a zombie until its parent reaps it)
            continue
    return found


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stored(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM signals").fetchone()
    return int(row[0]) if row else 0


def test_worker_killed_mid_crawl_loses_nothing_and_stores_each_item_once(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    urls = []
    for i in range(FEEDS):
        (site.root / f"f{i}.xml").write_text(rss(items(f"w{i}", PER_FEED)))
        site.set_delay(f"/f{i}.xml", 0.25)  # so the crawl outlives the worker
        urls.append(f"{site.url}/f{i}.xml")
    sources = write_sources(tmp_path / "s.toml", [{"name": "w", "kind": "feed", "urls": urls}])
    crawl = subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", "--sources", str(sources), "crawl", "w",
         "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
         "-s", "HARVEST_STORE_BATCH_SIZE=10", "-s", "HARVEST_STORE_FLUSH_SECONDS=0.2",
         "-s", "HARVEST_STORE_RECONNECT_SECONDS=1"],
        cwd=ROOT, env={**os.environ, "HARVEST_HOME": str(home), "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: list[psutil.Process] = []
    try:
        first = wait_for(lambda: workers_of(crawl.pid), "the store worker to start")[0]
        seen.append(first)
        wait_for(lambda: stored(db) > 0, "a first stored batch")
        # Stopped, then killed: batches sent meanwhile are in flight when it dies.
        first.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        seen += wait_for(lambda: [w for w in workers_of(crawl.pid) if w.pid != first.pid],
                         "a new store worker")
        _, errors = crawl.communicate(timeout=180)
    finally:
        crawl.kill()
    assert crawl.returncode == 0, errors[-2000:]
    log = next((home / "logs").glob("crawl-*.log")).read_text()
    assert "The store worker is gone" in log
    # Said once with its exit status, batch under way or not (without one, the log only
    # showed batches spooled with no reason).
    assert "The store worker ended unexpectedly (exit status -9)" in log, log[-3000:]

    total, distinct, max_seen = db.execute(
        "SELECT count(*), count(DISTINCT key), max(seen_count) FROM signals").fetchone()
    assert total == distinct == FEEDS * PER_FEED  # nothing lost
    assert max_seen == 1  # nothing written twice
    assert not list((home / "spool").glob("*.jsonl")), "the spool is replayed at close"
    scraped, stats = db.execute("SELECT scraped, stats FROM crawl_runs").fetchone()
    assert scraped == FEEDS * PER_FEED
    assert stats["harvest/store/spool_files"] >= 1
    assert stats["harvest/store/worker_restarts"] >= 1
    assert stats["harvest/store/batches"] >= 2  # the new worker took over mid-crawl
    assert stats["harvest/new"] + stats["harvest/spooled"] == FEEDS * PER_FEED
    assert all(gone(p) for p in seen), "no worker outlives the crawl"


def test_worker_exits_when_the_crawl_is_killed(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    (site.root / "slow.xml").write_text(rss(items("slow", 5)))
    site.set_delay("/slow.xml", 30)
    sources = write_sources(tmp_path / "s.toml", [{"name": "slow", "kind": "feed",
                                                   "urls": [f"{site.url}/slow.xml"]}])
    crawl = subprocess.Popen(
        [sys.executable, "-m", "scrapy", "crawl", "feed", "-a", "source=slow"],
        cwd=ROOT, env={**os.environ, "HARVEST_HOME": str(home),
                       "HARVEST_SOURCES": str(sources)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        worker = wait_for(lambda: workers_of(crawl.pid), "the store worker to start")[0]
        crawl.kill()  # no clean shutdown at all: the worker must notice on its own
        crawl.wait(timeout=30)
        wait_for(lambda: gone(worker), "the worker to exit", seconds=30)
    finally:
        crawl.kill()


def scraped_so_far(log: Path) -> int:
    """The last "scraped N items" of Scrapy's periodic LogStats line."""
    counts = re.findall(r"scraped (\d+) items", log.read_text()) if log.exists() else []
    return int(counts[-1]) if counts else 0


def test_a_stalled_worker_stalls_the_crawl_instead_of_filling_memory(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    feeds, per_feed, batch, in_flight = 30, 20, 10, 2
    urls = []
    for i in range(feeds):
        (site.root / f"s{i}.xml").write_text(rss(items(f"s{i}", per_feed)))
        site.set_delay(f"/s{i}.xml", 0.1)
        urls.append(f"{site.url}/s{i}.xml")
    sources = write_sources(tmp_path / "s.toml", [{"name": "s", "kind": "feed", "urls": urls}])
    log = tmp_path / "crawl.log"
    crawl = subprocess.Popen(
        [sys.executable, "-m", "scrapy", "crawl", "feed", "-a", "source=s",
         "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
         "-s", f"HARVEST_STORE_BATCH_SIZE={batch}",
         "-s", f"HARVEST_STORE_MAX_IN_FLIGHT={in_flight}",
         "-s", "LOG_LEVEL=INFO", "-s", f"LOG_FILE={log}", "-s", "LOGSTATS_INTERVAL=0.2"],
        cwd=ROOT, env={**os.environ, "HARVEST_HOME": str(home),
                       "HARVEST_SOURCES": str(sources)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        worker = wait_for(lambda: workers_of(crawl.pid), "the store worker to start")[0]
        wait_for(lambda: stored(db) > 0, "a first stored batch")
        worker.send_signal(signal.SIGSTOP)  # a database that stops answering
        time.sleep(1)
        at_stop = scraped_so_far(log)
        time.sleep(3)  # 30 feeds x 0.1 s: without back-pressure the crawl would finish
        stalled = scraped_so_far(log)
        worker.send_signal(signal.SIGCONT)
        _, errors = crawl.communicate(timeout=120)
    finally:
        crawl.kill()
    assert crawl.returncode == 0, errors[-2000:]
    # What the crawl holds while the worker is stopped: the batches in flight, the one
    # being filled, and the items of the response being parsed.
    assert stalled - at_stop <= (in_flight + 1) * batch + per_feed
    assert stalled < feeds * per_feed // 2
    assert stored(db) == feeds * per_feed


def test_crawlers_of_one_process_share_one_worker(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources, names = [], ["one", "two", "three"]
    for name in names:
        urls = []
        for i in range(4):
            (site.root / f"{name}{i}.xml").write_text(rss(items(f"{name}{i}", 10)))
            site.set_delay(f"/{name}{i}.xml", 0.5)  # so the crawlers run at the same time
            urls.append(f"{site.url}/{name}{i}.xml")
        sources.append({"name": name, "kind": "feed", "urls": urls})
    path = write_sources(tmp_path / "s.toml", sources)
    crawl = subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", "--sources", str(path), "crawl", *names,
         "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
         "-s", "HARVEST_STORE_BATCH_SIZE=5"],
        cwd=ROOT, env={**os.environ, "HARVEST_HOME": str(home), "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    counts: list[int] = []
    try:
        while crawl.poll() is None:
            counts.append(len(workers_of(crawl.pid)))
            time.sleep(0.05)
        _, errors = crawl.communicate(timeout=120)
    finally:
        crawl.kill()
    assert crawl.returncode == 0, errors[-2000:]
    assert max(counts) == 1  # three crawlers, one worker
    assert stored(db) == 3 * 4 * 10
    assert db.execute("SELECT count(*) FROM crawl_runs").fetchone()[0] == 3


def test_the_worker_does_not_load_what_only_the_crawl_needs() -> None:
    # Every crawl process runs a worker: pydantic (sources, settings), Scrapy and Twisted
    # would add ≈ 12 MB and more to each for nothing it does.
    code = ("import sys, harvester.services.store_worker; "
            "print(sorted(m for m in ('pydantic', 'scrapy', 'twisted', 'alembic') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("threshold", [54_321, None])
def test_the_worker_tunes_its_collector_as_the_crawl_says(pg_url: str,
                                                         threshold: int | None) -> None:
    # The real worker over its real protocol: it is sent a Config, then end of file, and
    # says on its way out how its collector ran.
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count()))\n"
             "from harvester.services.store_worker import main\n"
             "main(sys.argv[1:])\n")
    ours, theirs = socket.socketpair()
    with theirs:
        proc = subprocess.Popen([sys.executable, "-c", probe, str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
    with ours:
        ours.sendall(_frame(Config(pg_url, 5, 1.0, clusters.DEFAULT_DISTANCE, threshold)))
        ours.shutdown(socket.SHUT_WR)
        out, _ = proc.communicate(timeout=60)
    gen0, frozen = map(int, out.split())
    if threshold is None:  # HARVEST_GC_FREEZE_ENABLED off: CPython's collector as it is
        assert (gen0, frozen) == (700, 0)
    else:  # numpy, psycopg and the rest of its start-up frozen out of the collector
        assert gen0 == threshold and frozen > 10_000


def test_the_store_worker_takes_the_crawls_collector_settings() -> None:
    def threshold(**settings: Any) -> int | None:
        return StoreConfig.from_settings(Settings(settings)).gc_threshold

    assert threshold() == 100_000
    assert threshold(HARVEST_GC_THRESHOLD=5000) == 5000
    assert threshold(HARVEST_GC_FREEZE_ENABLED=False, HARVEST_GC_THRESHOLD=5000) is None


def test_batches_in_flight_are_stored_in_order_and_cluster_across_batches(
    db: psycopg.Connection[Any], pg_url: str
) -> None:
    # Four batches sent at once, as a crawl does: the worker takes the fingerprints of the
    # later ones while it writes the first, but clusters are still planned batch after
    # batch, so a copy of a story sent in the last batch joins the first batch's row.
    texts = [STORY, OTHER, OTHER.replace("Developers", "Programmers"), SYNDICATED]

    async def go() -> list[Outcome]:
        worker = StoreWorker(Config(pg_url, connect_timeout=5, reconnect_seconds=1.0,
                                    cluster_distance=clusters.DEFAULT_DISTANCE))
        await worker.start()
        try:
            return list(await asyncio.gather(*(
                worker.write(Batch(signals=[cluster_row(f"k{i}-{j}", text if j == 0 else None)
                                            for j in range(50)]))
                for i, text in enumerate(texts))))
        finally:
            await worker.close()

    outcomes = asyncio.run(go())
    assert [o.status for o in outcomes] == ["stored"] * 4
    assert [o.result.new for o in outcomes if o.result] == [{"s": 50}] * 4
    rows = {key: (i, c, h) for key, i, c, h in db.execute(
        "SELECT key, id, cluster_id, simhash FROM signals WHERE key LIKE 'k%-0'")}
    assert all(h is not None for _, _, h in rows.values())
    # Written one after the other, in order: each batch's transaction id (taken at its first
    # write) follows the one before. Ids need not: the first batch a worker gets has no plan
    # and draws its ids as it is written, while the planner may already have drawn the next
    # batch's.
    written = dict(db.execute(
        "SELECT key, xmin::text::bigint FROM signals WHERE key LIKE 'k%-0'").fetchall())
    assert written["k0-0"] < written["k1-0"] < written["k2-0"] < written["k3-0"]
    assert rows["k3-0"][1] == rows["k0-0"][0]  # the syndicated copy joined the story
    assert rows["k2-0"][1] == rows["k1-0"][0]
    assert rows["k1-0"][1] == rows["k1-0"][0]
