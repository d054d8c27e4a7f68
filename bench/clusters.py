"""Cluster lookup latency as ``signals`` grows (10k → 1M), and what clustering adds to a
stored batch.

A private embedded PostgreSQL (or a scratch database on HARVEST_DATABASE_URL) is filled
with generate_series: well-spread 64-bit fingerprints (md5 of the row number). A lookup is
the banded query of harvester/services/clusters.py for one batch; half the probes are
near-duplicates (2 bits off) of stored rows, so both the hit and the miss paths run.
Prints JSON; docs/clusters.md quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import rows  # noqa: E402
from simhash import corpus  # noqa: E402

from harvester.services import clusters, database, embedded  # noqa: E402
from harvester.services.batch import Batch  # noqa: E402
from harvester.services.simhash import signed  # noqa: E402
from harvester.services.store import write_batch  # noqa: E402

FILL = """
INSERT INTO signals (key, source, kind, fetched_at, simhash, cluster_id)
SELECT 'bench:' || g, 'bench', 'feed', now(),
       ('x' || substr(md5(g::text), 1, 16))::bit(64)::bigint, NULL
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


def fill(url: str, count: int) -> psycopg.Connection[Any]:
    database.migrate(url)
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(FILL, (1, count))
    conn.execute("VACUUM ANALYZE signals")
    return conn


def probe_rows(conn: psycopg.Connection[Any], stored: int, batch: int,
               rng: random.Random) -> list[tuple[int, int]]:
    keys = [f"bench:{rng.randint(1, stored)}" for _ in range(batch // 2)]
    near = [h for (h,) in conn.execute("SELECT simhash FROM signals WHERE key = ANY(%s)",
                                       (keys,)).fetchall()]
    hashes = [signed(h ^ 0b101 << rng.randint(0, 60)) for h in near]
    hashes += [signed(rng.getrandbits(64)) for _ in range(batch - len(hashes))]
    return [(-(i + 1), h) for i, h in enumerate(hashes)]  # ids that match nothing


def lookups(conns: dict[int, psycopg.Connection[Any]], batch: int, reps: int,
            distance: int) -> dict[int, dict[str, float]]:
    """Latency per table size; the sizes take turns so load on the machine hits all alike."""
    rng = random.Random(batch)
    times: dict[int, list[float]] = {size: [] for size in conns}
    for _ in range(reps):
        for size, conn in conns.items():
            params = clusters._params(probe_rows(conn, size, batch, rng), distance)
            start = time.perf_counter()
            conn.execute(clusters._NEAREST, params).fetchall()
            times[size].append((time.perf_counter() - start) * 1000)
    return {size: {"p50_ms": round(statistics.median(t), 3),
                   "p95_ms": round(sorted(t)[int(len(t) * 0.95) - 1], 3)}
            for size, t in times.items()}


async def store_rate(url: str, count: int, batch: int) -> float:
    """Rows/s of write_batch (fingerprints and cluster assignment included) on varied texts."""
    data = rows(count, str(uuid.uuid4()))
    for row, text in zip(data, corpus(count, seed=count), strict=True):
        row["text"] = text
    async with await psycopg.AsyncConnection.connect(url) as conn:
        start = time.perf_counter()
        for i in range(0, count, batch):
            await write_batch(conn, Batch(signals=data[i:i + batch]))
        return count / (time.perf_counter() - start)


def run(urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"distance": args.distance, "lookup_batch": args.batch}
    database.migrate(urls["store"])
    result["store_rows_per_s"] = round(asyncio.run(store_rate(urls["store"], args.store, 500)))
    conns = {size: fill(urls[str(size)], size) for size in args.sizes}
    try:
        small, large = min(args.sizes), max(args.sizes)
        for batch in (1, args.batch):
            found = lookups(conns, batch, args.reps, args.distance)
            for size, figures in found.items():
                result[f"{size}_batch{batch}"] = figures
            result[f"ratio_p50_batch{batch}"] = round(
                found[large]["p50_ms"] / found[small]["p50_ms"], 2)
        result["band_indexes_mb_at_largest"] = round(conns[large].execute(
            "SELECT sum(pg_relation_size(indexrelid))::float8 / 1e6 FROM pg_index "
            "WHERE indexrelid::regclass::text LIKE 'signals_simhash_band%'").fetchone()[0], 1)
    finally:
        for conn in conns.values():
            conn.close()
    return result


def scratch(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=100, help="signals per lookup query")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--distance", type=int, default=clusters.DEFAULT_DISTANCE)
    parser.add_argument("--store", type=int, default=20_000, help="rows for the store rate")
    args = parser.parse_args()
    external = os.environ.get("HARVEST_DATABASE_URL")
    work = Path(tempfile.mkdtemp(prefix="harvest-bench-clusters-", dir="/tmp"))
    # Scratch databases only, never the operator's own tables.
    names = {key: f"harvest_bench_{key}" for key in ["store", *map(str, args.sizes)]}
    server = external or embedded.start(work / "pg")
    try:
        urls = {key: scratch(server, name) for key, name in names.items()}
        print(json.dumps(run(urls, args), indent=2))
    finally:
        if external:
            with psycopg.connect(external, autocommit=True) as conn:
                for name in names.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            embedded.stop(work / "pg", mode="fast")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
