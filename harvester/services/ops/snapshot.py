"""Snapshots: every signal as NDJSON (one JSON object per line) with a manifest.

The export runs in one REPEATABLE READ transaction, so the file is the table as of one
instant however long the export takes and whatever crawls write meanwhile. Lines are
PostgreSQL's own ``row_to_json`` of the stored columns, and a restore parses them back with
``jsonb_populate_recordset`` into the same column types: timestamps, arrays, jsonb and
reals come back exactly as they were.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from harvester.services.ops import OpsError, files, merge

KIND = "snapshot"
_FETCH = 2000
_RESTORE_CHUNK = 1000


def _open_write(path: Path, compress: bool) -> IO[bytes]:
    # The same rows give the same bytes, so equal snapshots have equal checksums.
    return files.GzipWriter(path) if compress else path.open("wb")


def _open_read(path: Path, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else path.open("rb")


def take(conn: psycopg.Connection[Any], directory: Path, *, compress: bool,
         schema_revision: str | None) -> dict[str, Any]:
    """Write ``signals-<stamp>.ndjson[.gz]`` and its manifest; return the manifest."""
    base = files.new_base(directory, "signals")
    final = base.with_name(base.name + (".ndjson.gz" if compress else ".ndjson"))
    tmp = final.with_name(final.name + ".tmp")
    rows = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        columns = merge.table_columns(conn)
        query = sql.SQL(
            "SELECT row_to_json(r)::text FROM (SELECT {} FROM signals ORDER BY id) r"
        ).format(merge.column_list(columns))
        with files.writing(tmp), _open_write(tmp, compress) as fh, \
                conn.cursor(name="snapshot") as cur:
            cur.itersize = _FETCH
            cur.execute(query)
            for (line,) in cur:
                fh.write(line.encode("utf-8") + b"\n")
                rows += 1
    return files.finish(tmp, final, {
        "kind": KIND, "table": "signals", "rows": rows, "columns": columns,
        "schema_revision": schema_revision, "compression": "gzip" if compress else None,
    })


def _chunks(fh: IO[bytes]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for raw in fh:
        line = raw.strip()
        if line:
            chunk.append(line.decode("utf-8"))
        if len(chunk) >= _RESTORE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def restore(conn: psycopg.Connection[Any], path: Path) -> merge.MergeResult:
    """Put back the signals of a snapshot whose key is missing (checksum checked first)."""
    data, manifest = files.load(path, KIND)
    columns = list(manifest["columns"])
    with conn.transaction():
        merge.stage(conn, columns)
        load = sql.SQL("INSERT INTO restore_rows SELECT * FROM "
                       "jsonb_populate_recordset(NULL::restore_rows, %s::jsonb)")
        try:
            with _open_read(data, manifest.get("compression") == "gzip") as fh:
                for chunk in _chunks(fh):
                    conn.execute(load, ("[" + ",".join(chunk) + "]",))
        except (OSError, EOFError, UnicodeDecodeError, psycopg.errors.DataError) as exc:
            raise OpsError(f"{data} cannot be read back ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); nothing was "
                           "restored") from exc
        staged = conn.execute("SELECT count(*) FROM restore_rows").fetchone()
        if staged is None or staged[0] != manifest["rows"]:
            raise OpsError(f"{data} holds {staged[0] if staged else 0} rows but its manifest "
                           f"says {manifest['rows']}; nothing was restored")
        return merge.merge(conn, columns)
