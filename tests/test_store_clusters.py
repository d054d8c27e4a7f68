"""The store assigns clusters before it inserts: each new row written once, with its final
cluster, and the race with another writer repaired. Real PostgreSQL, several connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from harvester.services import clusters
from harvester.services.batch import Batch, BatchResult
from harvester.services.simhash import simhash
from harvester.services.store import Recent, plan_batch, write_batch

STORY = (
    "The city council voted on Tuesday to expand the river flood barrier after two winters "
    "of record water levels. Engineers said the new walls would protect four thousand homes "
    "in the eastern districts, and the work should begin in spring once contracts are signed. "
    "Residents who lost property in last year's flooding told the meeting that the plan came "
    "too late, while the mayor promised a compensation fund financed by a regional grant."
)
SYNDICATED = STORY.replace("on Tuesday", "on Tuesday evening") + " Share this article."
OTHER = (
    "A small software company released an open source database engine written in Rust, "
    "claiming faster queries on analytical workloads than established systems. Developers "
    "praised the documentation but questioned the benchmark methodology, noting that the "
    "comparison used default configurations and tiny datasets that fit entirely in memory."
)
BASE = 0x0123456789ABCDEF


def row(key: str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"key": key, "source": "s", "kind": "feed", "url": f"https://x.org/{key}",
            "canonical_url": f"https://x.org/{key}", "title": None, "text": text,
            "fetched_at": now, "published_at": now, "tags": [], "engagement": {},
            "score": 1.0, "score_breakdown": {"base": 1.0},
            "run_id": "6f1a1f4c-8c1a-4d3e-9a55-111111111111", **extra}


def store(pg_url: str, *batches: list[dict[str, Any]]) -> list[BatchResult]:
    async def go() -> list[BatchResult]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            return [await write_batch(conn, Batch(signals=rows)) for rows in batches]

    return asyncio.run(go())


def stored(db: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """``{key: (id, cluster_id)}``."""
    return {key: (i, c) for key, i, c in db.execute("SELECT key, id, cluster_id FROM signals")}


def dangling(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM signals s WHERE NOT EXISTS "
                     "(SELECT 1 FROM signals t WHERE t.id = s.cluster_id)").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def updates(db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Records the id of every signals row an UPDATE touches (in ``test_updated``)."""
    db.execute("CREATE TABLE test_updated (id bigint)")
    db.execute("CREATE FUNCTION test_log_update() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN INSERT INTO test_updated VALUES (NEW.id); RETURN NULL; END $$")
    db.execute("CREATE TRIGGER test_log_update AFTER UPDATE ON signals FOR EACH ROW "
               "EXECUTE FUNCTION test_log_update()")
    try:
        yield db
    finally:
        db.execute("DROP TRIGGER test_log_update ON signals")
        db.execute("DROP FUNCTION test_log_update()")
        db.execute("DROP TABLE test_updated")


def updated(db: psycopg.Connection[Any]) -> list[int]:
    return sorted(i for (i,) in db.execute("SELECT id FROM test_updated"))


def test_new_rows_are_inserted_once_with_their_cluster(
        updates: psycopg.Connection[Any], pg_url: str) -> None:
    store(pg_url, [row("a", STORY)])
    [result] = store(pg_url, [row("b", SYNDICATED), row("c", OTHER),
                              row("d", OTHER.replace("Developers", "Programmers")), row("e")])
    ids = stored(updates)
    assert ids["b"][1] == ids["a"][0]  # joined the stored story
    assert ids["c"][1] == ids["c"][0]  # a new story
    assert ids["d"][1] == ids["c"][0]  # joined an earlier row of its batch
    assert ids["e"][1] == ids["e"][0]  # no text: its own cluster
    assert ids["a"][0] < ids["b"][0] < ids["c"][0] < ids["d"][0] < ids["e"][0]
    assert result.new == {"s": 4} and updated(updates) == []


def test_a_reseen_row_of_the_batch_is_a_match(updates: psycopg.Connection[Any],
                                               pg_url: str) -> None:
    store(pg_url, [row("a", STORY)])
    [result] = store(pg_url, [row("a", STORY), row("b", SYNDICATED)])
    ids = stored(updates)
    assert ids["b"][1] == ids["a"][0] == ids["a"][1]
    assert (result.new, result.reseen) == ({"s": 1}, {"s": 1})
    assert updated(updates) == [ids["a"][0]]  # the re-seen row's counters, nothing else


def test_nearest_wins_and_stored_wins_a_tie(db: psycopg.Connection[Any], pg_url: str) -> None:
    store(pg_url, [row("stored", "x", simhash=BASE)])
    store(pg_url, [
        row("far", "x", simhash=BASE ^ 0b1111),   # 4 bits from stored: a cluster of its own
        row("tie", "x", simhash=BASE ^ 0b0011),   # 2 from stored, 2 from far
        row("near", "x", simhash=BASE ^ 0b0111),  # 3 from stored, 1 from far
    ])
    ids = stored(db)
    assert ids["far"][1] == ids["far"][0]
    assert ids["tie"][1] == ids["stored"][0]
    assert ids["near"][1] == ids["far"][0]


def test_the_lookup_leaves_the_planner_as_it_was(db: psycopg.Connection[Any],
                                                 pg_url: str) -> None:
    async def go() -> tuple[list[clusters.Assignment], str]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.transaction():
            await conn.execute("SELECT 1")
            planned = await clusters.plan_clusters(conn, [(10**12, simhash(STORY))])
            setting = await (await conn.execute("SHOW enable_bitmapscan")).fetchone()
            assert setting is not None
            return planned, setting[0]

    store(pg_url, [row("a", STORY)])
    [planned], setting = asyncio.run(go())
    assert planned.cluster_id == stored(db)["a"][0] and setting == "on"
    # Under the lookup's setting no bitmap scan can read a crowded band value in full.
    with db.transaction():
        db.execute(clusters._INDEX_SCANS)
        plan = "\n".join(line for (line,) in db.execute(
            "EXPLAIN " + clusters._NEAREST, clusters._params([(1, 42)], 3, False)))
    assert "Bitmap" not in plan and "signals_simhash_band0" in plan


def test_corroboration_does_not_scan_the_table_under_stale_statistics(
        db: psycopg.Connection[Any], pg_url: str) -> None:
    # TRUNCATE keeps statistics. After a table of one big cluster was analysed, a generic
    # plan expected every row to share any cluster id, and corroboration's "a member
    # outside the batch" lookup (LIMIT 1) ran as a full scan per touched cluster:
    # 0.5-1 s per batch, 40 s of PostgreSQL CPU for one benchmark crawl.
    db.execute("ALTER TABLE signals SET (autovacuum_enabled = false)")
    try:
        db.execute("INSERT INTO signals (key, source, kind, fetched_at, cluster_id) "
                   "SELECT 'old' || n, 's', 'feed', now(), 1 FROM generate_series(1, 3000) n")
        db.execute("ANALYZE signals")
        db.execute("TRUNCATE signals")
        store(pg_url, [row(f"stored-{n}") for n in range(2000)])
        scans = asyncio.run(_seq_scans_of_one_batch(pg_url, [row(f"new-{n}") for n in range(40)]))
    finally:
        db.execute("ALTER TABLE signals RESET (autovacuum_enabled)")
        db.execute("TRUNCATE signals")
        db.execute("ANALYZE signals")
    assert scans == 0


async def _seq_scans_of_one_batch(pg_url: str, rows: list[dict[str, Any]]) -> int:
    """Sequential scans of ``signals`` while one batch is stored with generic plans (what
    a long-running store worker gets), counted inside its transaction, then rolled back."""
    async with await psycopg.AsyncConnection.connect(pg_url, prepare_threshold=0) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await write_batch(conn, Batch(signals=rows))  # a savepoint in the open transaction
        found = await (await conn.execute(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'signals'")
        ).fetchone()
        await conn.rollback()
    return int(found[0]) if found else 0


async def _until_waiting_for_a_lock(watch: psycopg.AsyncConnection[Any], pid: int,
                                    task: asyncio.Task[BatchResult]) -> None:
    for _ in range(600):  # a guard against a hang, not a measure
        cur = await watch.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        found = await cur.fetchone()
        if found is not None and found[0] == "Lock":
            return
        if task.done():
            await task
            raise AssertionError("write_batch finished without waiting for the other writer")
        await asyncio.sleep(0.05)
    raise AssertionError("write_batch never waited for the other writer's lock")


def race(pg_url: str, other_writer: str, params: dict[str, Any],
         batch: list[dict[str, Any]]) -> BatchResult:
    """Connection B runs ``other_writer`` and keeps its transaction open; A's write_batch
    starts, blocks on B's row in its INSERT; B commits; A finishes."""
    async def go() -> BatchResult:
        async with await psycopg.AsyncConnection.connect(pg_url) as a, \
                await psycopg.AsyncConnection.connect(pg_url) as b, \
                await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watch:
            await b.execute(other_writer, params)
            task = asyncio.create_task(write_batch(a, Batch(signals=batch)))
            try:
                await _until_waiting_for_a_lock(watch, a.info.backend_pid, task)
            finally:
                await b.commit()
            return await task

    return asyncio.run(go())


def test_a_key_inserted_meanwhile_by_another_writer(db: psycopg.Connection[Any],
                                                    pg_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # B inserts "a" as the store would (its own cluster); A's lookup cannot see it yet, so A
    # draws an id for "a", plans "b" into that id's cluster and copies both as new rows. The
    # COPY waits for B, fails on the unique key once B commits, and the batch is written
    # again through the upsert: "a" is then re-seen and "b" joins B's row.
    caplog.set_level(logging.INFO, logger="harvester.services.store")
    result = race(pg_url, """
        WITH n AS (SELECT nextval('signals_id_seq') AS id)
        INSERT INTO signals (id, cluster_id, key, source, kind, fetched_at, text, simhash)
        SELECT id, id, 'a', 'other', 'feed', now(), %(text)s, %(simhash)s FROM n
        """, {"text": STORY, "simhash": simhash(STORY)},
        [row("a", STORY), row("b", SYNDICATED)])
    ids = stored(db)
    seen = db.execute("SELECT source, seen_count FROM signals WHERE key = 'a'").fetchone()
    assert seen == ("other", 2)  # B's row, counted as seen again by A
    assert ids["b"][1] == ids["a"][1] == ids["a"][0]
    assert dangling(db) == 0
    assert (result.new, result.reseen) == ({"s": 1}, {"s": 1})
    assert "writing the batch again through the upsert" in caplog.text


def test_a_key_deleted_meanwhile_is_inserted_anew(db: psycopg.Connection[Any],
                                                  pg_url: str) -> None:
    # A's lookup still sees "a" (B's delete is not committed) and plans "b" into its
    # cluster; "a" is then inserted with a new id and "b" must follow it.
    store(pg_url, [row("a", STORY)])
    old = stored(db)["a"][0]
    result = race(pg_url, "DELETE FROM signals WHERE key = %(key)s", {"key": "a"},
                  [row("a", STORY), row("b", SYNDICATED)])
    ids = stored(db)
    assert ids["a"][0] != old and ids["a"][1] == ids["a"][0]
    assert ids["b"][1] == ids["a"][0]
    assert dangling(db) == 0
    assert result.new == {"s": 2}


def planned_ahead(pg_url: str, plans: list[list[dict[str, Any]]], writes: list[int],
                  keep: int = 16) -> list[BatchResult]:
    """As the store worker does: every batch of ``plans`` planned first, on a connection of
    its own, then the batches numbered in ``writes`` written one after the other, with
    their plans, on another connection (a batch left out was never written: spooled)."""
    async def go() -> list[BatchResult]:
        recent = Recent(keep)
        async with await psycopg.AsyncConnection.connect(pg_url) as planner, \
                await psycopg.AsyncConnection.connect(pg_url) as writer:
            batches = [Batch(signals=rows) for rows in plans]
            made = [await plan_batch(planner, batch, recent) for batch in batches]
            return [await write_batch(writer, batches[i], plan=made[i], recent=recent)
                    for i in writes]

    return asyncio.run(go())


def test_a_batch_planned_before_the_one_ahead_was_written_joins_its_rows(
        db: psycopg.Connection[Any], pg_url: str) -> None:
    # The second batch's lookup ran before the first batch was written, so it could not see
    # the first batch's story: the write adds the rows stored since (Recent).
    first, second = planned_ahead(pg_url, [[row("a", STORY), row("b", OTHER)],
                                           [row("c", SYNDICATED), row("d")]], [0, 1])
    ids = stored(db)
    assert ids["c"][1] == ids["a"][0]
    assert ids["d"][1] == ids["d"][0]
    assert ids["a"][0] < ids["b"][0] < ids["c"][0] < ids["d"][0]
    assert (first.new, second.new) == ({"s": 2}, {"s": 2})


def test_a_plan_older_than_what_is_kept_is_made_again(db: psycopg.Connection[Any],
                                                      pg_url: str) -> None:
    # Two batches stored since the plan was made, one kept: the write cannot know what the
    # other held, so it looks the batch up again itself, and still finds the story.
    planned_ahead(pg_url, [[row("a", STORY)], [row("b", OTHER)], [row("c", SYNDICATED)]],
                  [0, 1, 2], keep=1)
    ids = stored(db)
    assert ids["c"][1] == ids["a"][0]


def test_a_batch_never_written_is_no_cluster_of_later_batches(db: psycopg.Connection[Any],
                                                               pg_url: str) -> None:
    # The first batch was planned, then never written (the crawl spooled it): the second,
    # planned before that was known, must not point at the id drawn for its story.
    [result] = planned_ahead(pg_url, [[row("a", STORY)], [row("c", SYNDICATED)]], [1])
    ids = stored(db)
    assert list(ids) == ["c"] and ids["c"][1] == ids["c"][0]
    assert dangling(db) == 0 and result.new == {"s": 1}


def test_a_key_planned_as_new_and_stored_by_the_batch_ahead_is_reseen(
        db: psycopg.Connection[Any], pg_url: str) -> None:
    # Both batches hold "a" and were planned before either was written: the second one's
    # COPY meets the stored key and the batch is written again through the upsert.
    first, second = planned_ahead(pg_url, [[row("a", STORY)],
                                           [row("a", STORY), row("b", SYNDICATED)]], [0, 1])
    ids = stored(db)
    seen = db.execute("SELECT seen_count FROM signals WHERE key = 'a'").fetchone()
    assert seen == (2,) and ids["b"][1] == ids["a"][0]
    assert first.new == {"s": 1}
    assert (second.new, second.reseen) == ({"s": 1}, {"s": 1})
    assert dangling(db) == 0


def test_a_run_replayed_after_a_newer_one_leaves_the_source_state_as_the_newer_made_it(
        db: psycopg.Connection[Any], pg_url: str) -> None:
    # A failed run spooled to its own directory and replayed after a good run made
    # `harvest sources` show the failure (1 failure, its error) as the latest state.
    now = datetime.now(UTC)

    def run(minutes_ago: int, success: bool) -> dict[str, Any]:
        at = now - timedelta(minutes=minutes_ago)
        return {"id": str(uuid.uuid4()), "spider": "feed", "sources": ["fz"],
                "started_at": at, "finished_at": at, "finish_reason": "finished",
                "source_states": {"fz": {
                    "attempted_at": at, "success": success,
                    "validators": {"https://x.org/f": {"etag": f'"{minutes_ago}"'}},
                    "last_error": None if success else "HTTP 404"}}}

    newer, older = run(1, True), run(5, False)

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            await write_batch(conn, Batch(run=newer))
            await write_batch(conn, Batch(run=older))  # the late replay

    asyncio.run(go())
    state = db.execute("SELECT consecutive_failures, last_error, last_attempt = last_success, "
                       "validators FROM sources_state WHERE source = 'fz'").fetchone()
    assert state == (0, None, True, {"https://x.org/f": {"etag": '"1"'}})
    assert db.execute("SELECT count(*) FROM crawl_runs").fetchone() == (2,)  # both recorded


def test_a_deadlock_with_another_writer_writes_the_batch_again(
        db: psycopg.Connection[Any], pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # Two writers taking the same rows in other orders (two feeds listing the same items,
    # a retain deleting by id): PostgreSQL aborts one. For the store that was "the database
    # is down": the batch was spooled, and every later one until a reconnect.
    caplog.set_level(logging.INFO, logger="harvester.services.store")
    store(pg_url, [row("x", STORY), row("y", SYNDICATED)])

    async def go() -> BatchResult:
        async with await psycopg.AsyncConnection.connect(pg_url) as a, \
                await psycopg.AsyncConnection.connect(pg_url) as b, \
                await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watch:
            await b.execute("SET deadlock_timeout = '5s'")  # so that A detects it
            await b.execute("UPDATE signals SET seen_count = seen_count WHERE key = 'y'")
            task = asyncio.create_task(write_batch(a, Batch(signals=[row("x", STORY),
                                                                      row("y", SYNDICATED)])))
            await _until_waiting_for_a_lock(watch, a.info.backend_pid, task)
            # B now wants A's row: a cycle, and A, whose check runs first, is aborted.
            await b.execute("UPDATE signals SET seen_count = seen_count WHERE key = 'x'")
            await b.commit()
            return await task

    result = asyncio.run(go())
    assert result.reseen == {"s": 2}
    assert db.execute("SELECT key, seen_count FROM signals ORDER BY key").fetchall() == [
        ("x", 2), ("y", 2)]
    assert "deadlock detected; writing the batch again" in caplog.text


def test_a_partial_sighting_never_replaces_a_complete_read(
    db: psycopg.Connection[Any], pg_url: str
) -> None:
    # A partial row (pages: the article page failed, the listing's fields alone) is a
    # sighting of a stored row, not its new version; and in one batch holding the same key
    # twice it lost the complete row's text when it came last.
    store(pg_url, [row("kept", "the article")],
          [row("kept", "the listing", partial=True)],
          [row("twice", "the article"), row("twice", "the listing", partial=True)],
          [row("edited", "the article")],
          [row("edited", "an edit"), row("edited", "the listing", partial=True)])
    texts = dict(db.execute("SELECT key, text || ' ×' || seen_count FROM signals").fetchall())
    assert texts == {"kept": "the article ×2", "twice": "the article ×1",
                     "edited": "an edit ×2"}
