"""API benchmark: latency (p50/p95) of ``/signals/top`` and ``/signals?q=`` with 1M signals
stored, throughput from a loopback load generator, and what migration 0007's indexes cost.

1. A private embedded PostgreSQL (or a scratch database on HARVEST_DATABASE_URL), migrated;
   N signals generated in SQL (``generate_series``): titles of 6–10 and texts of 30 words
   drawn from a 2,000-word vocabulary with a skewed (Zipf-like) distribution, 50 sources,
   dates over 90 days, random scores, one signal in ten clustered with its predecessor.
2. How long 0007's indexes take to build on that table (what `harvest migrate` costs).
3. ``harvest serve`` against it (rate limit off); each endpoint requested sequentially over
   one keep-alive connection: p50/p95.
4. Throughput: T threads, each with its own keep-alive connection, for D seconds.
5. The store step alone (bench/pipeline.py's ``write_batch`` loop, 2 KB rows) with and
   without 0007's indexes, interleaved rounds, median.

Figures go to stdout and bench/out/api.json; docs/api.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
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
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import rows, store_batched  # noqa: E402

from harvester.services import database, embedded  # noqa: E402

VOCAB_SIZE = 2000
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "sa", "do", "fi", "gu", "ha")
LOAD = """
INSERT INTO signals (key, source, kind, url, canonical_url, title, text, fetched_at,
                     published_at, first_seen, last_seen, score, score_breakdown, tags,
                     cluster_id)
SELECT 'b:' || g, 'src-' || (g %% 50), 'feed', 'https://bench.example/' || g,
       'https://bench.example/' || g,
       (SELECT string_agg((%(vocab)s::text[])[1 + floor(%(n)s * power(random(), 3))::int], ' ')
        FROM generate_series(1, 6 + (g %% 5))),
       -- "+ g * 0" makes the subquery correlated: evaluated per row, not once.
       (SELECT string_agg((%(vocab)s::text[])[1 + floor(%(n)s * power(random(), 3))::int], ' ')
        FROM generate_series(1, 30 + g * 0)),
       t, t, t, t, s,
       jsonb_build_object('score', s, 'topics', CASE WHEN g %% 5 = 0
            THEN '{"security": {"keywords": ["ransomware"], "points": 2}}'::jsonb
            ELSE '{}'::jsonb END),
       '{bench}', CASE WHEN g %% 10 = 0 THEN g - 1 END
FROM (SELECT g, now() - random() * interval '90 days' AS t, (random() * 100)::real AS s
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) x
"""


def vocabulary() -> list[str]:
    rng = random.Random(7)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCAB_SIZE:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def migration_0007() -> Any:
    path = ROOT / "harvester/migrations/versions/0007_api_indexes.py"
    spec = importlib.util.spec_from_file_location("m0007", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(url: str, n: int, vocab: list[str]) -> dict[str, Any]:
    chunk = 100_000
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE signals")
        conn.execute("SELECT setval('signals_id_seq', 1, false)")
        for lo in range(1, n + 1, chunk):
            conn.execute(LOAD, {"vocab": vocab, "n": VOCAB_SIZE, "lo": lo,
                                "hi": min(n, lo + chunk - 1)})
            print(f"  loaded {min(n, lo + chunk - 1):,} signals", flush=True)
        loaded = time.perf_counter() - started
        m = migration_0007()
        conn.execute(m.DOWNGRADE)
        started = time.perf_counter()
        conn.execute(m.UPGRADE)
        build = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE signals")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('signals')), "
                            "pg_size_pretty(pg_relation_size('signals_fts'))").fetchone()
    assert size is not None
    return {"signals": n, "load_s": round(loaded, 1), "index_build_0007_s": round(build, 1),
            "table_size": size[0], "fts_index_size": size[1]}


class Server:
    def __init__(self, url: str, home: Path) -> None:
        self.port = _free_port()
        sources = home / "sources.toml"
        sources.write_text('[[sources]]\nname = "src-1"\nkind = "feed"\n'
                           'urls = ["http://127.0.0.1:9/x"]\n\n[topics.security]\n'
                           'keywords = ["ransomware"]\n')
        env = {**os.environ, "HARVEST_DATABASE_URL": url, "HARVEST_HOME": str(home),
               "HARVEST_API_RATE": "off"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harvester.cli", "--sources", str(sources), "serve",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("harvest serve did not start")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> bytes:
        own = conn or self.connection()
        own.request("GET", path)
        response = own.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status} {body[:200]!r}")
        if conn is None:
            own.close()
        return body

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def latency(server: Server, paths: list[str], requests_n: int) -> dict[str, Any]:
    conn = server.connection()
    for path in paths[:10]:
        server.get(path, conn)  # warm the pool and caches
    times = []
    hits = []
    for i in range(requests_n):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        body = server.get(path, conn)
        times.append((time.perf_counter() - started) * 1000)
        hits.append(len(json.loads(body).get("items", [None])))
    conn.close()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "mean_items": round(statistics.mean(hits), 1), "requests": requests_n}


def throughput(server: Server, paths: list[str], threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        conn = server.connection()
        i = k
        while time.monotonic() < stop:
            server.get(paths[i % len(paths)], conn)
            counts[k] += 1
            i += 1
        conn.close()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return round(sum(counts) / (time.perf_counter() - started), 1)


def store_cost(url: str, n: int, rounds: int) -> dict[str, Any]:
    m = migration_0007()
    measured: dict[str, list[float]] = {"without_0007": [], "with_0007": []}
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(rounds):
            for label in measured:
                conn.execute("TRUNCATE signals")
                conn.execute("DROP INDEX IF EXISTS signals_fts, signals_seen_at")
                if label == "with_0007":
                    conn.execute(m.UPGRADE)
                data = rows(n, str(uuid.uuid4()))
                took = asyncio.run(store_batched(url, data, 500))
                measured[label].append(n / took)
                print(f"  store {label}: {n / took:,.0f} rows/s", flush=True)
        conn.execute("TRUNCATE signals")
        conn.execute("DROP INDEX IF EXISTS signals_fts, signals_seen_at")
        conn.execute(m.UPGRADE)
    result: dict[str, Any] = {k: round(statistics.median(v)) for k, v in measured.items()}
    result["cost_pct"] = round(100 * (1 - result["with_0007"] / result["without_0007"]), 1)
    result["rows"] = n
    return result


def _scratch(server_url: str, name: str) -> str:
    """A database of our own on an external server: never the operator's signals."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def query_paths(vocab: list[str], n: int) -> dict[str, list[str]]:
    def q(text: str) -> str:
        return "/signals?q=" + quote(text)

    return {
        "/signals/top (limit 20)": ["/signals/top?limit=20"],
        "/signals (newest 50)": ["/signals?limit=50"],
        "/signals?sort=score": ["/signals?sort=score&limit=50"],
        "/signals?q= one very common word (~50 % of titles)": [q(vocab[0]), q(vocab[1])],
        "/signals?q= one mid word (~1.5 %)": [q(w) for w in vocab[50:60]],
        "/signals?q= one rare word (~0.2 %)": [q(w) for w in vocab[1500:1510]],
        "/signals?q= two words": [q(f"{vocab[i]} {vocab[i + 40]}") for i in range(10, 20)],
        "/signals?q= phrase + since 7d": [q(f'"{vocab[0]} {vocab[1]}"') + "&since=7d"],
        "/signals/{id}": [f"/signals/{i}" for i in range(1, n, max(1, n // 20))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per endpoint, sequential")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store-rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="harvest-bench-api-", dir="/tmp"))
    external = os.environ.get("HARVEST_DATABASE_URL")
    scratch = f"harvest_bench_api_{uuid.uuid4().hex[:8]}"
    try:
        url = _scratch(external, scratch) if external else embedded.start(work / "pg")
        database.migrate(url)
        vocab = vocabulary()
        print(f"loading {args.signals:,} signals …", flush=True)
        results: dict[str, Any] = {"data": load(url, args.signals, vocab), "latency": {}}
        print(json.dumps(results["data"]), flush=True)
        server = Server(url, work)
        try:
            for label, paths in query_paths(vocab, args.signals).items():
                results["latency"][label] = latency(server, paths, args.requests)
                print(f"  {label}: {results['latency'][label]}", flush=True)
            paths = query_paths(vocab, args.signals)
            results["throughput_rps"] = {
                "/signals/top": throughput(server, paths["/signals/top (limit 20)"],
                                           args.threads, args.seconds),
                "/signals?q= (mid + rare words)": throughput(
                    server, paths["/signals?q= one mid word (~1.5 %)"]
                    + paths["/signals?q= one rare word (~0.2 %)"], args.threads, args.seconds),
            }
            print(f"  throughput: {results['throughput_rps']}", flush=True)
        finally:
            server.stop()
        print("store step alone, with and without 0007's indexes …", flush=True)
        results["store_cost"] = store_cost(url, args.store_rows, args.rounds)
        results["machine"] = {"cpus": os.cpu_count(), "threads": args.threads}
    finally:
        if external:
            with psycopg.connect(external, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        else:
            embedded.stop(work / "pg", mode="immediate")
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "bench/out/api.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
