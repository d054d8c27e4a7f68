"""Migrations and the batch writer against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from harvester.items import Signal
from harvester.migrations import HEAD
from harvester.pipelines.dedupe import assign_key
from harvester.services import database
from harvester.services.batch import Batch
from harvester.services.store import write_batch
from harvester.services.urls import url_key
from tests.conftest import harvest, scratch_database


def test_head_constant_matches_alembic() -> None:
    assert database.head_revision() == HEAD


def test_crawlers_of_one_process_finding_the_schema_behind_migrate_it_once(
    pg_url: str
) -> None:
    # The store pipelines of a `harvest crawl` of several sources open in threads of one
    # process: each found a new database behind and ran Alembic at once, which is not
    # thread-safe; they deadlocked (the crawl hung for good, holding the migration's
    # advisory lock) or failed with KeyError: 'config'.
    url, name = scratch_database(pg_url)
    try:
        start = threading.Barrier(3)
        ran: list[bool] = []
        failed: list[BaseException] = []

        def open_store() -> None:
            start.wait()
            try:
                ran.append(database.ensure_schema(url))
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=open_store, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "the migrations deadlocked"
        assert failed == [] and sorted(ran) == [False, False, True]
        assert database.current_revision(url) == HEAD
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_schema_is_current_after_migrate(pg_url: str) -> None:
    assert database.current_revision(pg_url) == HEAD
    assert database.ensure_schema(pg_url) is False


def test_0012_to_0014_upgrade_what_is_stored(
        private_pg: tuple[Path, str]) -> None:
    # The sitemap, Hacker News search and Reddit kinds now take what is newer than the
    # cursor's "since"; a source crawled before the upgrade must not take everything again.
    from alembic import command

    _, url = private_pg
    command.downgrade(database._alembic_config(url), "0011")
    assert database.current_revision(url) == "0011"
    last = datetime(2026, 11, 20, 6, 30, 15, 123456, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")  # what a session's zone does not move
        conn.execute("INSERT INTO sources_state (source, last_success, cursor) VALUES "
                     "('old', %s, '{\"seen\": {}}'), ('never', NULL, '{}'), "
                     "('partly', %s, '{}')", (last, last))
        # 'partly': its last run (at its last success) failed in part; the one before it,
        # a day earlier, did not: what the partly failed run missed is asked for again.
        earlier = last - timedelta(days=1)
        for started, errors in ((earlier, 0), (last, 1)):
            conn.execute(
                "INSERT INTO crawl_runs (id, spider, sources, started_at, finish_reason, stats) "
                "VALUES (gen_random_uuid(), 'feed', '{partly}', %s, 'finished', %s)",
                (started, Jsonb({"harvest/by_source": {"partly": {
                    "fetched": 2, "entries": 10, "errors": errors}}})))
        # 0013: alerts keep the story and URL they announced, of an archived signal too.
        kept = conn.execute("INSERT INTO signals (key, source, kind, url, fetched_at) VALUES "
                            "('k', 's', 'feed', 'https://a.example/kept', now()) "
                            "RETURNING id").fetchone()[0]
        conn.execute("UPDATE signals SET cluster_id = id")
        conn.execute("INSERT INTO notifications (kind, signal_id, channel, status, payload) "
                     "VALUES ('signal', %s, 'slack', 'sent', '{}'), ('signal', %s, 'slack', "
                     "'sent', '{\"signal\": {\"url\": \"https://a.example/gone\"}}')",
                     (kept, kept + 1000))
        # 0014: tweets keyed by their address, which names the author, as 0013 stored them.
        tweets = store_tweets_as_0013_keyed_them(conn)
    database.migrate(url)
    with psycopg.connect(url) as conn:
        keys = dict(conn.execute("SELECT url, key FROM signals").fetchall())
        canonical = dict(conn.execute("SELECT url, canonical_url FROM signals").fetchall())
        assert conn.execute("SELECT signal_id, cluster_id, signal_url FROM notifications "
                            "ORDER BY signal_id").fetchall() == [
            (kept, kept, "https://a.example/kept"),
            (kept + 1000, None, "https://a.example/gone")]
        cursors = dict(conn.execute("SELECT source, cursor FROM sources_state").fetchall())
    assert cursors["never"] == {}
    assert datetime.fromisoformat(cursors["partly"]["since"]) == earlier
    assert cursors["old"]["seen"] == {}
    assert datetime.fromisoformat(cursors["old"]["since"]) == last
    # 0014: each tweet stored before is found by the key a later sighting of it gets,
    # whatever its author is called then: the same signal, not a new one.
    for then, now in (("https://x.com/alice/status/11", "https://x.com/i/web/status/11"),
                      ("https://x.com/i/web/status/22", "https://x.com/al/status/22"),
                      ("https://twitter.com/alice/status/33?s=20", "https://x.com/bob/status/33")):
        assert keys[then] == next_key(now), then
    assert canonical["https://x.com/alice/status/11"] == "https://x.com/i/web/status/11"
    # Copies stored before of one tweet: one takes its key, the rest keep theirs.
    for copy in ("https://x.com/alice/status/22", "https://x.com/alice_renamed/status/22",
                 "https://x.com/alice/status/33", "https://x.com/alice"):
        assert (keys[copy], canonical[copy]) == tweets[copy], copy


def store_tweets_as_0013_keyed_them(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
    """Signals as the code of schema 0013 stored them: ``{url: (key, canonical_url)}``.
    Tweet 22 three times (the author's name, none, a new name), tweet 33 from a feed
    linking it on twitter.com and then from X; an X profile, which is no tweet."""
    rows = {url: (url_key(url), url) for url in (
        "https://x.com/alice/status/11", "https://x.com/alice/status/22",
        "https://x.com/i/web/status/22", "https://x.com/alice_renamed/status/22",
        "https://twitter.com/alice/status/33?s=20", "https://x.com/alice/status/33",
        "https://x.com/alice")}
    for url, (key, canonical) in rows.items():
        conn.execute("INSERT INTO signals (key, source, kind, url, canonical_url, fetched_at) "
                     "VALUES (%s, 'x', 'x', %s, %s, now())", (key, url, canonical))
    return rows


def next_key(url: str) -> str:
    """The key the dedupe step gives a signal of this URL now."""
    return assign_key(Signal(source="x", kind="x", url=url))


def test_a_role_that_may_not_create_the_schema_is_one_sentence(
        private_pg: tuple[Path, str], tmp_path: Path) -> None:
    # A 116-line SQLAlchemy traceback from `migrate` and every command that migrates.
    _, url = private_pg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE ROLE limited LOGIN")
        conn.execute("CREATE DATABASE lim")
    limited = psycopg.conninfo.make_conninfo(url, user="limited", dbname="lim")
    result = harvest("migrate", home=tmp_path / "home", env={"HARVEST_DATABASE_URL": limited})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().endswith(
        "refused the migration (permission denied for schema public); its role needs to own "
        "its schema (or CREATE on it), or run `harvest migrate` once as its owner")
    assert "Traceback" not in result.stderr


def row(key: str, source: str, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"key": key, "source": source, "kind": "feed", "url": f"https://x.org/{key}",
            "canonical_url": f"https://x.org/{key}", "title": f"t {key}", "text": "b\\t\n\x00",
            "fetched_at": now, "published_at": now, "tags": ['a "quoted"', "b\\c"],
            "engagement": {}, "score": 1.5, "score_breakdown": {"k": [1, 2]},
            "run_id": "6f1a1f4c-8c1a-4d3e-9a55-111111111111", **extra}


def test_batch_counts_new_and_reseen_per_source_and_applies_once(
    db: psycopg.Connection[Any], pg_url: str
) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            first = await write_batch(conn, Batch(signals=[row("a", "s1"), row("b", "s2")]))
            assert (first.new, first.reseen) == ({"s1": 1, "s2": 1}, {})
            again = Batch(signals=[row("a", "s2"), row("c", "s2")])
            second = await write_batch(conn, again)
            assert (second.new, second.reseen) == ({"s2": 1}, {"s2": 1})
            assert (await write_batch(conn, again)).already_applied

    asyncio.run(go())
    rows = db.execute("SELECT key, seen_count, tags, text, score_breakdown FROM signals "
                      "ORDER BY key").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("a", 2), ("b", 1), ("c", 1)]
    assert rows[0][2] == ['a "quoted"', "b\\c"]
    assert rows[0][3] == "b\\t\n"  # NUL cannot be stored; everything else survives
    assert rows[0][4] == {"k": [1, 2]}


def test_rows_up_to_4_kb_are_stored_uncompressed(db: psycopg.Connection[Any],
                                                  pg_url: str) -> None:
    """Migration 0010: compressing 2-4 KB rows cost a quarter of PostgreSQL's CPU in the
    store's COPY; they stay as they are, and longer texts are still compressed."""
    words = [f"word{i % 50}" for i in range(2_000)]  # compressible, as prose is
    short, long = " ".join(words[:400]), " ".join(words)  # ≈ 2.8 KB and ≈ 14 KB
    asyncio.run(_write(pg_url, Batch(signals=[row("short", "s", text=short),
                                              row("long", "s", text=long)])))
    stored = dict(db.execute("SELECT key, pg_column_compression(text) FROM signals "
                             "WHERE key IN ('short', 'long')").fetchall())
    assert stored == {"short": None, "long": "pglz"}


async def _write(pg_url: str, batch: Batch) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        await write_batch(conn, batch)


def test_the_url_shown_for_the_embedded_server_connects(pg_url: str) -> None:
    # Shown as postgresql://postgres@/tmp/…/pg/postgres, it read as a database named
    # "tmp/…" when pasted into psql.
    shown = database.describe_url(pg_url)
    assert "?host=/" in shown or not psycopg.conninfo.conninfo_to_dict(pg_url)[
        "host"].startswith("/")
    with psycopg.connect(shown, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    secret = database.describe_url("postgresql://u:S3cret@db.example:5433/harvest")
    assert secret == "postgresql://u@db.example:5433/harvest"
