"""``harvest verify``: is the database whole and consistent, and is anything left outside it?

Each check returns findings: ``problem`` (wrong whatever the system was doing: fix it),
``warning`` (explainable by normal operation, worth a look) or ``ok`` (what was checked).

What is deliberately *not* a problem:
- a ``signals.run_id`` or ``rejects.run_id`` with no ``crawl_runs`` row: a run's row is
  written by its last batch, so a crawl still running, killed, or whose last batch waits in
  the spool leaves exactly that; so does restoring a snapshot (it carries signals only);
- a ``cluster_id`` naming a deleted signal: the cluster's first signal aged out under
  retention; its members still share the id, so grouping is intact;
- ``crawl_runs.stored`` against the signals of that run: items spooled during the run are
  counted when replayed and retention deletes rows, so the two legitimately differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harvester.messages import first_line
from harvester.migrations import schema_advice
from harvester.services import spool
from harvester.services.ops.backup import leftover_scratch


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # "problem", "warning" or "ok"
    check: str
    message: str


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]  # fixed query text
    return row[0] if row else None


def schema(conn: psycopg.Connection[Any], head: str) -> list[Finding]:
    if not _one(conn, "SELECT to_regclass('alembic_version') IS NOT NULL"):
        return [Finding("problem", "schema", "no harvester schema in this database; run "
                        "`harvest migrate` (or restore a backup)")]
    current = _one(conn, "SELECT version_num FROM alembic_version")
    if current != head:
        return [Finding("problem", "schema", schema_advice(current))]
    return [Finding("ok", "schema", f"schema at revision {head} (head)")]


def sequences(conn: psycopg.Connection[Any]) -> list[Finding]:
    """An id sequence behind its table makes the next insert fail (restores can do that)."""
    rows = conn.execute("""
        SELECT table_name, column_name,
               pg_get_serial_sequence(quote_ident(table_name), column_name)
        FROM information_schema.columns
        WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'
        ORDER BY table_name""").fetchall()
    out = []
    for table, column, seq in rows:
        row = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(column), sql.Identifier(table))).fetchone()
        state = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
            sql.Identifier(*seq.split(".", 1)))).fetchone()
        assert row is not None and state is not None
        highest = row[0]
        # What nextval hands out: last_value itself while is_called is false (setval(…,
        # false)); "is at 0" was said of such a sequence.
        following = state[0] + 1 if state[1] else state[0]
        if highest is not None and following <= highest:
            out.append(Finding("problem", "sequences", f"{seq} would hand out {following} next "
                               f"but {table}.{column} goes up to {highest}: the next insert "
                               f"fails; run SELECT setval('{seq}', {highest}) in psql"))
    if not out:
        out.append(Finding("ok", "sequences", f"{len(rows)} id sequences ahead of their rows"))
    return out


def signal_rows(conn: psycopg.Connection[Any]) -> list[Finding]:
    bad = _one(conn, "SELECT count(*) FROM signals WHERE seen_count < 1 "
                     "OR last_seen < first_seen")
    total = _one(conn, "SELECT count(*) FROM signals")
    if bad:
        return [Finding("problem", "signals", f"{bad} signals have seen_count < 1 or were last "
                        "seen before they were first seen; they were written by hand or by "
                        "a broken import")]
    return [Finding("ok", "signals", f"{total} signals, counters and dates consistent")]


def orphans(conn: psycopg.Connection[Any]) -> list[Finding]:
    out: list[Finding] = []
    for table in ("signals", "rejects"):
        rows, runs = conn.execute(sql.SQL(
            "SELECT count(*), count(DISTINCT t.run_id) FROM {} t WHERE t.run_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM crawl_runs r WHERE r.id = t.run_id)"
        ).format(sql.Identifier(table))).fetchone() or (0, 0)
        if rows:
            out.append(Finding("warning", "runs", f"{rows} {table} rows name {runs} crawl runs "
                               "that have no crawl_runs row (a crawl still running or killed, "
                               "its last batch spooled, or rows restored from a snapshot)"))
    if not out:
        out.append(Finding("ok", "runs", "every run id points to a crawl_runs row"))
    dangling = _one(conn, "SELECT count(*) FROM signals s WHERE s.cluster_id IS NOT NULL AND "
                          "NOT EXISTS (SELECT 1 FROM signals c WHERE c.id = s.cluster_id)")
    if dangling:
        out.append(Finding("warning", "clusters", f"{dangling} signals belong to clusters whose "
                           "first signal was deleted (retention or archive); they still group "
                           "together"))
    else:
        out.append(Finding("ok", "clusters", "every cluster id points to a signal"))
    return out


def spooled(conn: psycopg.Connection[Any], spool_dir: Path) -> list[Finding]:
    out = []
    aside = spool.set_aside(spool_dir)
    if aside["unreadable"]:
        out.append(Finding("problem", "spool", f"{aside['unreadable']} unreadable spool files "
                           f"(*.bad) in {spool_dir}: their items are not in the database; "
                           "inspect them"))
    if aside["refused"]:
        out.append(Finding("problem", "spool", f"{aside['refused']} spool files the database "
                           f"refused (*.refused) in {spool_dir}: the crawl log or `harvest "
                           "replay` says why; fix it, then `harvest replay --retry-refused`"))
    partial = spool.partial(spool_dir)
    if partial:
        out.append(Finding("problem", "spool", f"{len(partial)} spool files (*.tmp) in "
                           f"{spool_dir} were being written when their crawl was killed; "
                           "`harvest replay` stores those that are whole and renames the "
                           "rest .bad (their items are not in the database)"))
    pending = spool.pending(spool_dir)
    ids = [b for b in map(spool.batch_id, pending) if b]
    applied = set()
    if ids:
        applied = {str(r[0]) for r in conn.execute(
            "SELECT batch_id FROM applied_batches WHERE batch_id = ANY(%s::uuid[])", (ids,))}
    waiting = len(pending) - len(applied)
    if waiting:
        out.append(Finding("warning", "spool", f"{waiting} spooled batches wait in {spool_dir} "
                           "and are not in the database yet; run `harvest replay`"))
    if applied:
        out.append(Finding("warning", "spool", f"{len(applied)} spool files hold batches that "
                           "are already stored; `harvest replay` removes them"))
    if not out:
        out.append(Finding("ok", "spool", f"spool empty ({spool_dir})"))
    return out


def sources(conn: psycopg.Connection[Any], names: set[str] | None) -> list[Finding]:
    if names is None:
        return [Finding("warning", "sources", "the sources file could not be read, so source "
                        "state was not compared with it")]
    stored = {r[0] for r in conn.execute("SELECT source FROM sources_state")}
    unknown = sorted(stored - names)
    if unknown:
        return [Finding("warning", "sources", f"sources_state has rows for sources not in the "
                        f"sources file: {', '.join(unknown)} (renamed or removed sources)")]
    return [Finding("ok", "sources", f"{len(stored)} source states, all in the sources file")]


def amcheck(conn: psycopg.Connection[Any]) -> list[Finding]:
    """``bt_index_check`` on every B-tree index; the extension is created in a transaction
    that is rolled back, so verifying leaves the database as it was."""
    out: list[Finding] = []
    with conn.transaction(force_rollback=True):
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        except (psycopg.errors.UndefinedFile, psycopg.errors.InsufficientPrivilege,
                psycopg.errors.FeatureNotSupported) as exc:
            first = first_line(exc)
            return [Finding("warning", "amcheck", f"amcheck is not available here ({first}); "
                            "index structure was not checked")]
        indexes = conn.execute("""
            SELECT c.oid, c.relname FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_am a ON a.oid = c.relam
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE a.amname = 'btree' AND n.nspname = current_schema() AND i.indisvalid
            ORDER BY c.relname""").fetchall()
        for oid, name in indexes:
            try:
                with conn.transaction():
                    conn.execute("SELECT bt_index_check(%s::oid::regclass)", (oid,))
            except (psycopg.errors.IndexCorrupted, psycopg.errors.DataCorrupted,
                    psycopg.InternalError) as exc:
                out.append(Finding("problem", "amcheck", f"index {name} is corrupt "
                                   f"({first_line(exc)}); run REINDEX INDEX {name}"))
    if not out:
        out.append(Finding("ok", "amcheck", f"{len(indexes)} B-tree indexes checked with "
                           "amcheck"))
    return out


def scratch(conn: psycopg.Connection[Any]) -> list[Finding]:
    """Scratch databases `backup verify` left (a verification killed outright): each is a
    full copy of the data, and every interrupted nightly run left one more."""
    left = leftover_scratch(conn)
    if not left:
        return [Finding("ok", "scratch", "no scratch database of `backup verify` left")]
    names = ", ".join(f"{name} ({size / 2**20:.0f} MB)" for name, size in left)
    return [Finding("warning", "scratch", f"{len(left)} scratch databases of interrupted "
                    f"`backup verify` runs are left: {names}; once no verification runs, drop "
                    f"each with DROP DATABASE <name> WITH (FORCE) in psql")]


def run_all(conn: psycopg.Connection[Any], *, head: str, spool_dir: Path,
            source_names: set[str] | None) -> list[Finding]:
    """Every check, in order; stops after the schema check when there is no schema."""
    found = schema(conn, head)
    if not _one(conn, "SELECT to_regclass('signals') IS NOT NULL"):
        return found
    for check in (sequences, signal_rows, orphans, amcheck, scratch):
        found += check(conn)
    found += spooled(conn, spool_dir)
    found += sources(conn, source_names)
    return found
