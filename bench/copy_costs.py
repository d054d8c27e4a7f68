"""``make bench-copy``: what PostgreSQL spends on the store's COPY of new rows into
``signals``, per row, and when it spends it.

The rows are ``bench/pipeline.py``'s distinct texts, fingerprinted and given ids and
clusters, written batch by batch (500) on one connection with the store's own binary COPY
values and dumpers (``harvester/services/store.py``: ``copy_values``, ``use_copy_dumpers``),
into a fresh embedded PostgreSQL (or a scratch database on HARVEST_DATABASE_URL). The
server's CPU is read from ``/proc/<backend pid>/schedstat`` of the connection's backend, so
the machine must be the server's (the embedded one is).

- **by index set**: the server's CPU a row with every index, with none but the two keys,
  and with one group dropped at a time (the title's full-text GIN index, the four simhash
  band indexes, the five other B-trees);
- **when**: the server's CPU while the client sends the rows and after it has sent them
  (at the end of the COPY), for the store's binary COPY and for the same COPY with a
  volatile ``WHERE``, which makes PostgreSQL insert each row as it arrives.

Prints JSON and writes bench/out/copy_costs.json; docs/benchmarks.md quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import distinct_rows, in_scratch, truncate  # noqa: E402

from harvester.services import database, embedded  # noqa: E402
from harvester.services.simhash import fingerprints  # noqa: E402
from harvester.services.store import (  # noqa: E402
    _COPY_NEW,
    _NEW_COLUMNS,
    _NEW_TYPES,
    copy_values,
    use_copy_dumpers,
)

BATCH = 500
KEYS = ("signals_pkey", "signals_key_key")
GROUPS = {
    "title full-text (GIN)": ("signals_fts",),
    "simhash bands (4)": tuple(f"signals_simhash_band{b}" for b in range(4)),
    "other B-trees (5)": ("signals_source", "signals_score", "signals_published_at",
                          "signals_seen_at", "signals_cluster_id"),
}
# A volatile WHERE makes COPY insert row by row (no multi-insert buffer): PostgreSQL's
# binary COPY otherwise buffers up to 1,000 rows before it inserts any.
ROW_BY_ROW = sql.SQL("{} WHERE random() >= 0").format(_COPY_NEW)


def server_seconds(pid: int) -> float:
    """CPU time of a process so far, in seconds (nanosecond resolution)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def stored_rows(n: int) -> list[dict[str, Any]]:
    """The store's new rows as ``write_batch`` COPYs them: ids, clusters, fingerprints."""
    data = distinct_rows(n, str(uuid.uuid4()))
    texts = [f"{row['title']}\n{row['text']}" for row in data]
    for i, (row, fp) in enumerate(zip(data, fingerprints(texts), strict=True), start=1):
        row.update(id=i, cluster_id=i, simhash=fp, first_seen=row["fetched_at"],
                   last_seen=row["fetched_at"])
    return data


async def copy_rows(url: str, data: list[dict[str, Any]],
                    statement: sql.Composable) -> dict[str, float]:
    """µs a row: wall, client sending, waiting at the end, server CPU during each."""
    sending = ending = server_sending = server_ending = 0.0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        pid = conn.info.backend_pid
        for start in range(0, len(data), BATCH):
            async with conn.cursor() as cur:
                use_copy_dumpers(cur.adapters)
                async with cur.copy(statement) as copy:
                    copy.set_types(list(_NEW_TYPES))
                    t0, s0 = time.perf_counter(), server_seconds(pid)
                    for values in copy_values(data[start:start + BATCH], _NEW_COLUMNS):
                        await copy.write_row(values)
                    t1, s1 = time.perf_counter(), server_seconds(pid)
                t2, s2 = time.perf_counter(), server_seconds(pid)
                sending, ending = sending + t1 - t0, ending + t2 - t1
                server_sending, server_ending = server_sending + s1 - s0, server_ending + s2 - s1
            await conn.commit()
    per_row = 1e6 / len(data)
    return {"wall_us": round((sending + ending) * per_row, 1),
            "client_sending_us": round(sending * per_row, 1),
            "end_of_copy_us": round(ending * per_row, 1),
            "server_cpu_us": round((server_sending + server_ending) * per_row, 1),
            "server_cpu_while_sending_us": round(server_sending * per_row, 1),
            "server_cpu_at_end_us": round(server_ending * per_row, 1)}


def measure(url: str, data: list[dict[str, Any]], statement: sql.Composable,
            drop: tuple[str, ...] = ()) -> dict[str, float]:
    truncate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        definitions = [conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                    (name,)).fetchone()[0] for name in drop]
        for name in drop:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute("VACUUM ANALYZE signals")
        conn.execute("CHECKPOINT")
    try:
        return asyncio.run(copy_rows(url, data, statement))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for definition in definitions:
                conn.execute(definition)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 1) for key in runs[0]}


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("HARVEST_DATABASE_URL") or embedded.start(work / "pg")
    database.migrate(url)
    data = stored_rows(args.rows)
    with psycopg.connect(url) as conn:
        every_index = [name for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'signals'")]
    cases: dict[str, tuple[sql.Composable, tuple[str, ...]]] = {
        "every index": (_COPY_NEW, ()),
        "keys only": (_COPY_NEW, tuple(n for n in every_index if n not in KEYS)),
        **{f"without {group}": (_COPY_NEW, names) for group, names in GROUPS.items()},
        "every index, row by row": (ROW_BY_ROW, ()),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):  # interleaved: the machine's load drifts
        for name, (statement, drop) in cases.items():
            runs[name].append(measure(url, data, statement, drop))
            print(name, runs[name][-1], flush=True)
    return {"rows": args.rows, "batch": BATCH, "rounds": args.rounds,
            "median_per_row": {name: median_of(r) for name, r in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = in_scratch("harvest-copy-", lambda work: run(work, args), "copy_costs.json")
    print(json.dumps(results["median_per_row"], indent=2))


if __name__ == "__main__":
    main()
