"""Put exported signals back: stage the rows, then insert the ones whose key is missing.

Restoring is idempotent: a row whose ``key`` is already stored is left as it is (it may
have been re-seen since the export; the stored row is the newer truth). A restored row keeps
its ``id`` when that id is free, so notifications, briefs and clusters that name it still
do; an id taken by another signal (a file restored into a different database) gets a new
one, and ``cluster_id`` values naming rows of the same file follow their new ids. The
``signals`` id sequence is moved past every restored id, so later inserts cannot collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from harvester.services import corroboration
from harvester.services.ops import OpsError
from harvester.services.urls import tweet_canonical, url_key

TABLE = "signals"
STAGING = "restore_rows"
_SEQ = sql.SQL("pg_get_serial_sequence('signals', 'id')::regclass")


@dataclass(frozen=True, slots=True)
class MergeResult:
    rows: int  # rows in the file
    inserted: int  # rows that were missing and are back
    present: int  # rows whose key was already stored (left alone)
    renumbered: int  # inserted rows whose id was taken by another signal


def table_columns(conn: psycopg.Connection[Any], table: str = TABLE) -> list[str]:
    """Stored (not generated) columns of ``table`` in table order: what exports carry."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND is_generated = 'NEVER' "
        "ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


def column_list(columns: list[str], alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.SQL(", ").join(map(sql.Identifier, columns))
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns)


def stage(conn: psycopg.Connection[Any], columns: list[str]) -> None:
    """Create the (transaction-scoped) staging table with the file's columns."""
    current = set(table_columns(conn))
    unknown = [c for c in columns if c not in current]
    if unknown:
        raise OpsError(f"the file has columns this database's signals table lacks "
                       f"({', '.join(unknown)}): run `harvest migrate` with the code that "
                       "wrote it, or restore into a database at that schema")
    if "id" not in columns or "key" not in columns:
        raise OpsError("the file has no id or key column, so it cannot be merged safely")
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                 .format(sql.Identifier(STAGING), column_list(columns), sql.Identifier(TABLE)))


def _select_list(columns: list[str]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for col in columns:
        if col == "id":
            parts.append(sql.SQL("m.new_id"))
        elif col == "cluster_id":
            # The cluster's head as restored (or stored already, found by its key). A head
            # the file does not hold is left out: its id here may be another story's (a
            # restore into another database joined an unrelated cluster and raised its
            # score); such rows are clustered again by their fingerprints (_recluster).
            parts.append(sql.SQL("c.new_id"))
        else:
            parts.append(sql.Identifier("r", col))
    return sql.SQL(", ").join(parts)


def _orphans(conn: psycopg.Connection[Any], columns: list[str]) -> list[int]:
    """The new ids of the rows to insert that belonged to a cluster whose head the file
    does not hold (and is not stored here under its key)."""
    if "cluster_id" not in columns:
        return []
    return [i for (i,) in conn.execute("""
        SELECT m.new_id FROM restore_rows r
        JOIN restore_ids m ON m.old_id = r.id AND m.present_id IS NULL
        LEFT JOIN restore_ids c ON c.old_id = r.cluster_id
        WHERE r.cluster_id IS NOT NULL AND c.old_id IS NULL""").fetchall()]


def _recluster(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    """Cluster ``ids`` (just inserted, each alone) by their fingerprints, as the store
    would have: with the nearest stored signal's cluster (its own head back, restored into
    the database it was archived from), or alone."""
    if not ids:
        return
    rows = conn.execute("SELECT id, simhash FROM signals WHERE id = ANY(%s) "
                        "AND simhash IS NOT NULL ORDER BY id", (ids,)).fetchall()
    from harvester.services import clusters  # numpy: only for a restore, not every command

    clusters.assign_clusters_sync(conn, [(i, h) for i, h in rows])


def _join_stored_copies(conn: psycopg.Connection[Any], columns: list[str]) -> None:
    """Restored rows of a story another copy of which is stored here already (found by its
    key: a crawl or replay stored it between `restore` and `snapshot restore`) join that
    copy's cluster. They kept the file's cluster, their head's new id, and the story showed
    twice in `top` and briefs, each copy without the other's corroboration."""
    if "cluster_id" not in columns:
        return
    conn.execute("""
        WITH stored AS (
            SELECT DISTINCT ON (r.cluster_id) r.cluster_id AS old_cluster,
                   coalesce(s.cluster_id, s.id) AS cluster
            FROM restore_rows r
            JOIN restore_ids m ON m.old_id = r.id AND m.present_id IS NOT NULL
            JOIN signals s ON s.id = m.present_id
            WHERE r.cluster_id IS NOT NULL
            ORDER BY r.cluster_id, coalesce(s.cluster_id, s.id))
        UPDATE signals t SET cluster_id = stored.cluster
        FROM restore_rows r
        JOIN restore_ids m ON m.old_id = r.id AND m.present_id IS NULL
        JOIN stored ON stored.old_cluster = r.cluster_id
        WHERE t.id = m.new_id AND t.cluster_id IS DISTINCT FROM stored.cluster""")


def _rekey_tweets(conn: psycopg.Connection[Any]) -> None:
    """A tweet exported keyed by its address as written (before schema 0014) is keyed as
    services/urls keys it now, by its id (what migration 0014 did to stored rows): restored
    under its old key, it was stored a second time beside itself. Only rows keyed by their
    canonical URL are candidates (a feed entry keyed by its id is not)."""
    rows = conn.execute("SELECT id, key, canonical_url FROM restore_rows "
                        "WHERE canonical_url LIKE %s", ("%/status%",)).fetchall()
    moved = [(url_key(now), now, row_id) for row_id, key, canonical in rows
             if key == url_key(canonical)
             and (now := tweet_canonical(canonical)) is not None and now != canonical]
    if moved:
        with conn.cursor() as cur:
            cur.executemany("UPDATE restore_rows SET key = %s, canonical_url = %s "
                            "WHERE id = %s", moved)


def merge(conn: psycopg.Connection[Any], columns: list[str]) -> MergeResult:
    """Insert the staged rows whose key is missing; call inside the staging transaction."""
    if "canonical_url" in columns:
        _rekey_tweets(conn)
    conn.execute(sql.SQL(
        "SELECT setval({seq}, greatest((SELECT max(id) FROM signals), "
        "(SELECT max(id) FROM restore_rows), pg_sequence_last_value({seq})))").format(seq=_SEQ))
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE restore_ids ON COMMIT DROP AS
        SELECT r.id AS old_id, s.id AS present_id,
               coalesce(s.id, CASE WHEN EXISTS (SELECT 1 FROM signals x WHERE x.id = r.id)
                                   THEN nextval({seq}) ELSE r.id END) AS new_id
        FROM restore_rows r LEFT JOIN signals s ON s.key = r.key""").format(seq=_SEQ))
    cluster_join = (sql.SQL("LEFT JOIN restore_ids c ON c.old_id = r.cluster_id")
                    if "cluster_id" in columns else sql.SQL(""))
    orphans = _orphans(conn, columns)
    cur = conn.execute(sql.SQL("""
        INSERT INTO signals ({cols})
        SELECT {select} FROM restore_rows r
        JOIN restore_ids m ON m.old_id = r.id AND m.present_id IS NULL
        {cluster_join}
        ON CONFLICT (key) DO NOTHING""").format(
        cols=column_list(columns), select=_select_list(columns), cluster_join=cluster_join))
    inserted = cur.rowcount
    _recluster(conn, orphans)
    _join_stored_copies(conn, columns)
    # Every cluster a restored row is in now is recomputed, a lone one too: a head
    # restored without its members kept the corroboration it had when it was exported.
    restored = conn.execute("""
        SELECT DISTINCT coalesce(s.cluster_id, s.id) FROM restore_ids m
        JOIN signals s ON s.id = m.new_id WHERE m.present_id IS NULL""").fetchall()
    corroboration.rebuild_sync(conn, [c for (c,) in restored])
    counts = conn.execute(
        "SELECT count(*), count(present_id), "
        "count(*) FILTER (WHERE present_id IS NULL AND new_id <> old_id) FROM restore_ids"
    ).fetchone()
    assert counts is not None
    # Already stored: those found by key, and those a crawl stored between that lookup and
    # the insert (ON CONFLICT DO NOTHING skipped them): counts[1] missed the latter.
    return MergeResult(rows=counts[0], inserted=inserted, present=counts[0] - inserted,
                       renumbered=counts[2])
