"""Values PostgreSQL cannot hold never cost a batch. Lone surrogates (a broken character
JSON can carry, ``"\\ud800"``): JSON sources, validate and the store replace them with
U+FFFD. NaN and infinities (Python's json reads ``NaN`` and ``1e999``): parsers leave them
out of engagement, the store writes None for them in jsonb. A date whose offset takes it
past year 1 or 9999 loses the date, not the item. And a batch the store worker cannot
write fails on its own (the crawl spools it) instead of taking the worker down."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from scrapy.utils.test import get_crawler

from harvester import surrogates
from harvester.items import Rejection, Signal
from harvester.parsers.feed import parse_feed
from harvester.parsers.hackernews import load_json, parse_item
from harvester.parsers.reddit import parse_listing
from harvester.parsers.x import parse_search
from harvester.pipelines.store import reject_row
from harvester.pipelines.validate import ValidatePipeline
from harvester.services import clusters, spool
from harvester.services.batch import Batch
from harvester.services.localsite import LocalSite
from harvester.services.store import write_batch
from harvester.services.store_worker import Config, Outcome, StoreWorker
from tests.conftest import harvest, write_sources
from tests.test_store_clusters import row

FFFD = surrogates.REPLACEMENT
HIGH, LOW = "\ud800", "\udc00"  # halves of a surrogate pair, each on its own


def document(data: Any) -> bytes:
    """JSON as a broken source sends it: ``json.dumps`` writes a lone surrogate as the
    escape ``\\ud800``, the way such a source does."""
    return json.dumps(data).encode("ascii")


def encodable(value: Any) -> bool:
    """Whether every string in ``value`` can be encoded as UTF-8 (PostgreSQL's need)."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_json_loads_replaces_lone_halves_and_keeps_pairs_and_literals() -> None:
    body = document({"a": f"x{HIGH}y", f"k{LOW}": [LOW, "\U0001f600"],
                     "literal": "\\ud800", "n": 1})
    assert b"\\ud83d\\ude00" in body  # the emoji is written as an escaped pair
    expected = {"a": f"x{FFFD}y", f"k{FFFD}": [FFFD, "\U0001f600"], "literal": "\\ud800",
                "n": 1}
    assert surrogates.json_loads(body) == expected
    assert surrogates.json_loads(body.decode()) == expected
    assert surrogates.json_loads(body.decode().encode("utf-16")) == expected  # not bytewise
    assert json.loads(body)["a"] == f"x{HIGH}y"  # what plain json.loads hands over


def test_json_sources_replace_lone_surrogates_and_drop_non_finite_counts() -> None:
    reddit = parse_listing(document({"kind": "Listing", "data": {"after": None, "children": [
        {"kind": "t3", "data": {"name": "t3_a", "id": "a", "title": f"Bad {HIGH} one",
                                "selftext": f"body {LOW} here", "is_self": True,
                                "author": f"al{HIGH}ce", "permalink": "/r/p/comments/a/x/",
                                "subreddit": "p", "created_utc": 1767614400}}]}}))
    assert reddit.error is None and len(reddit.posts) == 1
    post = reddit.posts[0]
    assert (post["title"], post["text"], post["author"]) == (
        f"Bad {FFFD} one", f"body {FFFD} here", f"al{FFFD}ce")
    # Python's json reads NaN and 1e999 (an infinity); neither is a count to rank by.
    odd = parse_listing(b'{"kind": "Listing", "data": {"after": null, "children": [{"kind":'
                        b' "t3", "data": {"name": "t3_b", "id": "b", "title": "T",'
                        b' "permalink": "/r/p/comments/b/x/", "subreddit": "p",'
                        b' "created_utc": 1767614400, "score": NaN, "num_comments": 1e999,'
                        b' "upvote_ratio": 0.5}}]}}')
    assert odd.posts[0]["engagement"] == {"upvote_ratio": 0.5}

    x = parse_search(document({"data": [{"id": "1800000000000000000", "author_id": "u1",
                                         "text": f"zero-day {LOW} now"}],
                               "meta": {"result_count": 1}}))
    assert x.problem is None and x.tweets[0]["text"] == f"zero-day {FFFD} now"

    # Hacker News: markup with a lone surrogate inside (lxml ended the text there).
    doc, problem = load_json(document({"id": 7, "type": "story", "title": f"T{HIGH}",
                                       "by": "b", "time": 1767614400,
                                       "text": f"<p>before{HIGH}after</p><p>more</p>"}))
    assert problem is None
    fields = parse_item(doc).fields
    assert fields is not None and fields["title"] == f"T{FFFD}"
    assert fields["text"] == f"before{FFFD}after\nmore"

    feed = parse_feed(document({
        "version": "https://jsonfeed.org/version/1.1", "title": "f",
        "items": [{"id": "1", "url": "https://e.org/1", "title": f"A {HIGH} title",
                   "content_html": f"<p>one{LOW}two</p><p>three</p>",
                   "authors": [{"name": f"W{HIGH}"}], "tags": [f"t{LOW}"]}]}),
        "https://e.org/feed.json", "application/feed+json")
    assert feed.error is None and len(feed.entries) == 1
    entry = feed.entries[0]
    assert entry["title"] == f"A {FFFD} title"
    assert entry["text"] == f"one{FFFD}two\nthree"
    assert encodable(entry)


def test_validate_replaces_what_a_spider_built_itself() -> None:
    pipeline = ValidatePipeline(get_crawler(settings_dict={}))
    item = Signal(source="s", kind="feed", url="https://e.org/a\udc00b",
                  external_id="id\ud800", title="Title \ud800", text="Text\n\n \udfff end ",
                  author="Ann\ud800", tags=["t\ud800", "ok"],
                  link_url="https://e.org/\ud800")
    asyncio.run(pipeline.process_item(item))
    assert item.url == f"https://e.org/a{FFFD}b" and item.external_id == f"id{FFFD}"
    assert (item.title, item.text, item.author) == (
        f"Title {FFFD}", f"Text\n\n{FFFD} end", f"Ann{FFFD}")
    assert item.tags == [f"t{FFFD}", "ok"]
    assert item.link_url == f"https://e.org/{FFFD}"
    # A link that does not parse is only a pointer: dropped, the post kept.
    post = Signal(source="s", kind="reddit", url="https://e.org/p", title="Post",
                  link_url="http://[::1/x")
    asyncio.run(pipeline.process_item(post))
    assert post.link_url is None and post.title == "Post"


def test_a_date_past_the_calendar_edge_is_dropped_not_the_item() -> None:
    # .NET's DateTime.MinValue written with a local offset is no instant in UTC: converting
    # it raised OverflowError inside the pipeline, and Scrapy dropped the item with it.
    crawler = get_crawler(settings_dict={})
    pipeline = ValidatePipeline(crawler)
    east, west = timezone(timedelta(hours=2)), timezone(timedelta(hours=-14))
    item = Signal(source="s", kind="pages", url="https://e.org/a", title="Kept",
                  published_at=datetime(1, 1, 1, tzinfo=east),
                  updated_at=datetime(9999, 12, 31, 23, tzinfo=west))
    asyncio.run(pipeline.process_item(item))
    assert (item.title, item.published_at, item.updated_at) == ("Kept", None, None)
    assert crawler.stats.get_value("harvest/validate/out_of_range_date") == 2


def test_the_store_replaces_them_and_a_batch_it_cannot_write_is_not_fatal(
    db: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    # Rows that did not go through validate (another writer, an old spool file).
    broken = Batch(
        signals=[row("sur-1", "text \ud800 here", title="Title \udc00",
                     tags=["t\ud800"], engagement={"note": "x\udfff", "score": math.nan,
                                                   "ratio": math.inf, "n": 3,
                                                   "big": 2**70})],
        rejects=[reject_row(Rejection(source="s", reason="missing_link_and_id",
                                      url="https://e.org/\ud800",
                                      raw={"title": "raw \ud800", "k\udc00": ["\udfff"],
                                           "score": -math.inf}),
                            "6f1a1f4c-8c1a-4d3e-9a55-111111111111")],
    )
    # A batch of its spool file, written and read back, is still the same batch.
    back = spool.read(spool.write(tmp_path, broken))
    assert repr(back.signals) == repr(broken.signals)  # repr: NaN is not equal to itself

    async def go() -> list[Outcome]:
        worker = StoreWorker(Config(pg_url, connect_timeout=5, reconnect_seconds=1.0,
                                    cluster_distance=clusters.DEFAULT_DISTANCE))
        await worker.start()
        try:
            return [await worker.write(broken),
                    # A row without a key: no code path builds one, the worker must not die.
                    await worker.write(Batch(signals=[{"title": "no key"}])),
                    await worker.write(Batch(signals=[row("sur-2", "after it")]))]
        finally:
            await worker.close()

    stored, failed, after = asyncio.run(go())
    assert (stored.status, failed.status, after.status) == ("stored", "failed", "stored")
    assert failed.error.startswith("KeyError")
    title, text, tags, engagement = db.execute(
        "SELECT title, text, tags, engagement FROM signals WHERE key = 'sur-1'").fetchone()
    assert (title, text, tags, engagement) == (
        f"Title {FFFD}", f"text {FFFD} here", [f"t{FFFD}"],
        {"note": f"x{FFFD}", "score": None, "ratio": None, "n": 3,
         "big": 2**70})  # past 64 bits: orjson refuses it, json.dumps writes it
    url, raw = db.execute("SELECT url, raw FROM rejects").fetchone()
    assert url == f"https://e.org/{FFFD}"
    assert raw == {"title": f"raw {FFFD}", f"k{FFFD}": [FFFD], "score": None}
    assert db.execute("SELECT count(*) FROM signals WHERE key = 'sur-2'").fetchone() == (1,)


def test_a_json_feed_with_lone_surrogates_is_stored_whole(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    items = [{"id": "1", "url": f"{site.url}/1", "title": f"Broken {HIGH} title",
              "content_text": f"text {LOW} here"},
             {"id": "2", "url": f"{site.url}/2", "title": "Markup",
              "content_html": f"<p>a{HIGH}b</p><p>c</p>"},
             {"id": "3", "url": f"{site.url}/3", "title": "Fine", "content_text": "ok"}]
    (site.root / "feed.json").write_bytes(document(
        {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": items}))
    sources = write_sources(tmp_path / "s.toml",
                            [{"name": "j", "kind": "feed", "urls": [f"{site.url}/feed.json"]}])

    result = harvest("--sources", str(sources), "crawl", "j", home=home)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    rows = dict(db.execute("SELECT title, text FROM signals WHERE source = 'j'").fetchall())
    assert rows == {f"Broken {FFFD} title": f"text {FFFD} here", "Markup": f"a{FFFD}b\nc",
                    "Fine": "ok"}
    spooled = home / "spool"
    assert not spooled.exists() or not any(spooled.iterdir())


def test_the_store_writes_tags_and_documents_as_they_were(
    db: psycopg.Connection[Any], pg_url: str
) -> None:
    # The store's COPY dumps text[] and jsonb with dumpers of its own (store.py): what
    # PostgreSQL reads back must be what the rows held, for every shape a row can bring.
    nested = {"votes": {"up": 12, "ratio": 0.75, "by": ["ann", "ü 日本"]}, "flag": True,
              "none": None, "empty": [], "big": 2**70}
    rows = [row("d-1", "one", tags=["é 日本", "", "plain"], engagement=nested,
                score_breakdown={"topics": {"security": 2.0}, "recency": 0.5}),
            row("d-2", "two", tags=[], engagement={}, score_breakdown={}),
            row("d-3", "three", tags=["kept", None], engagement=[1, "two", None],
                score_breakdown="just text")]

    async def write(signals: list[dict[str, Any]]) -> None:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            await write_batch(conn, Batch(signals=signals))

    asyncio.run(write(rows))
    back = {key: (tags, engagement, breakdown) for key, tags, engagement, breakdown in db.execute(
        "SELECT key, tags, engagement, score_breakdown FROM signals")}
    assert back == {r["key"]: (r["tags"], r["engagement"], r["score_breakdown"]) for r in rows}
    # A tag that is not text fails its batch (the store worker answers "refused" and the
    # crawl spools it), rather than being stored as something else.
    with pytest.raises(psycopg.DataError, match="holds a int, not a str"):
        asyncio.run(write([row("d-5", "five", tags=["ok", 5])]))
    assert db.execute("SELECT count(*) FROM signals WHERE key = 'd-5'").fetchone() == (0,)
