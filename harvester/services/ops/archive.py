"""Archives: old signals moved out of the database into CSV, re-importable.

CSV rather than Parquet: PostgreSQL writes and reads it itself (``COPY … (FORMAT csv)``),
which round-trips every value exactly (NULL vs empty text, arrays, jsonb, timestamps),
needs no new dependency (pyarrow is ~100 MB) and opens in any tool an operator has. The
file is exported and its manifest written (fsynced) *before* a row is deleted; the deletion
then removes exactly the exported rows (see retention.py), so a crash at any point loses
nothing: at worst rows are both archived and still stored, and restoring skips them.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from harvester.messages import first_line
from harvester.services.ops import OpsError, files, merge, retention

KIND = "archive"


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    manifest: dict[str, Any]
    path: Path
    deleted: retention.DeleteReport


def _open(path: Path, mode: str, compressed: bool) -> IO[bytes]:
    if compressed:
        return files.GzipWriter(path) if "w" in mode else gzip.open(path, mode)  # type: ignore[return-value]
    return path.open(mode)  # type: ignore[return-value]


def archive(conn: psycopg.Connection[Any], directory: Path, cutoff: datetime, *,
            compress: bool, schema_revision: str | None) -> ArchiveReport | None:
    """Export signals last seen before ``cutoff`` to CSV, then delete them in batches;
    ``None`` (and no file) when no signal is that old."""
    with retention.one_deleter(conn):
        return _archive(conn, directory, cutoff, compress=compress,
                        schema_revision=schema_revision)


def _archive(conn: psycopg.Connection[Any], directory: Path, cutoff: datetime, *,
             compress: bool, schema_revision: str | None) -> ArchiveReport | None:
    base = files.new_base(directory, "signals-archive")
    final = base.with_name(base.name + (".csv.gz" if compress else ".csv"))
    tmp = final.with_name(final.name + ".tmp")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = retention.choose(conn, cutoff)  # same snapshot as the export below
        if rows == 0:
            return None
        columns = merge.table_columns(conn)
        query = sql.SQL(
            "COPY (SELECT {} FROM signals s JOIN {} d USING (id) ORDER BY id) "
            "TO STDOUT (FORMAT csv, HEADER true)").format(
            merge.column_list(columns, "s"), sql.Identifier(retention.DOOMED))
        with files.writing(tmp), _open(tmp, "wb", compress) as fh, conn.cursor() as cur, \
                cur.copy(query) as copy:
            for data in copy:
                fh.write(data)
    manifest = files.finish(tmp, final, {
        "kind": KIND, "table": "signals", "rows": rows, "columns": columns,
        "schema_revision": schema_revision, "compression": "gzip" if compress else None,
        "selection": {"last_seen_before": cutoff.isoformat()},
    })
    return ArchiveReport(manifest=manifest, path=final,
                         deleted=retention.delete_chosen(conn, cutoff))


def restore(conn: psycopg.Connection[Any], path: Path) -> merge.MergeResult:
    """Put back the archived signals whose key is missing (checksum checked first)."""
    data, manifest = files.load(path, KIND)
    columns = list(manifest["columns"])
    copy_in = sql.SQL("COPY restore_rows ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        merge.column_list(columns))
    with conn.transaction():
        merge.stage(conn, columns)
        try:
            with (_open(data, "rb", manifest.get("compression") == "gzip") as fh,
                  conn.cursor() as cur, cur.copy(copy_in) as copy):
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
        except (OSError, EOFError, psycopg.errors.DataError) as exc:
            first = first_line(exc)
            raise OpsError(f"{data} cannot be read back ({first}); nothing was restored"
                           ) from exc
        staged = conn.execute("SELECT count(*) FROM restore_rows").fetchone()
        if staged is None or staged[0] != manifest["rows"]:
            raise OpsError(f"{data} holds {staged[0] if staged else 0} rows but its manifest "
                           f"says {manifest['rows']}; nothing was restored")
        return merge.merge(conn, columns)
