"""Hacker News: the parser on hand-made API documents, and real crawls (``harvest crawl``,
``scrapy crawl``) against a stand-in Firebase / Algolia API into PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from harvester.parsers.hackernews import (
    ParsedItem,
    parse_hit,
    parse_id_list,
    parse_item,
    parse_search_page,
)
from harvester.spiders.hackernews import INDEX_LAG_S
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import ROOT, harvest, write_sources

NO_THROTTLE = ("-s", "AUTOTHROTTLE_ENABLED=False")
POSTED = 1723170441  # 2024-08-09 02:27:21 UTC


def item_page(item_id: int | str) -> str:
    return f"https://news.ycombinator.com/item?id={item_id}"


def reason(parsed: ParsedItem) -> str | None:
    return parsed.reject.reason if parsed.reject else None


def one(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# -- parser ----------------------------------------------------------------------------


def test_story_item_fields() -> None:
    parsed = parse_item({
        "by": "tel", "descendants": 16, "id": 121003, "kids": [121016], "score": 25,
        "text": "<i>or</i> HN: the Next Iteration<p>I get the impression &amp; more"
                "<p>80% &#x27;is&#x27; <a href=\"https://x.org\">x.org</a>",
        "time": POSTED, "title": "Ask HN:  The  Arc & <Effect>", "type": "story",
    })
    assert parsed.fields == {
        "url": item_page(121003), "external_id": "121003", "link_url": None,
        "title": "Ask HN: The Arc & <Effect>",  # plain text: & and < are content
        "text": "or HN: the Next Iteration\nI get the impression & more\n80% 'is' x.org",
        "author": "tel", "published_at": datetime(2024, 8, 9, 2, 27, 21, tzinfo=UTC),
        "tags": ["story"], "engagement": {"score": 25, "comments": 16},
    }


def test_items_that_are_missing_or_not_posts() -> None:
    assert parse_item(None).missing == "null"
    assert parse_item({"id": 5, "deleted": True, "type": "story", "time": POSTED}).missing \
        == "deleted"
    assert parse_item({"id": 6, "dead": True, "type": "story", "title": "t"}).missing == "dead"
    comment = parse_item({"id": 7, "type": "comment", "by": "norvig", "text": "Aw shucks"})
    assert comment.reject is not None and comment.reject.reason == "not_a_post"
    assert comment.reject.raw["by"] == "norvig"
    assert reason(parse_item({"id": 8, "type": "pollopt"})) == "not_a_post"
    assert reason(parse_item({"id": 9, "type": "weird"})) == "unknown_type"
    assert reason(parse_item({"type": "story", "title": "no id"})) == "missing_id"
    assert reason(parse_item([1, 2])) == "not_an_item"
    job = parse_item({"id": 3, "type": "job", "title": "We're hiring", "score": 1,
                      "url": "https://jobs.example/1", "by": "x", "time": POSTED})
    assert job.fields is not None
    assert job.fields["tags"] == ["job"] and job.fields["engagement"] == {"score": 1}
    assert job.fields["link_url"] == "https://jobs.example/1"


def test_id_list() -> None:
    assert parse_id_list(b"[3, 1, 3, null, \"x\", 2]") == ([3, 1, 2], [None, "x"], None)
    assert parse_id_list(b'{"error": "Permission denied"}')[2] == \
        "expected a JSON array of item ids, got dict"
    assert str(parse_id_list(b"<html>")[2]).startswith("not JSON")


def test_algolia_hits_and_pages() -> None:
    story = parse_hit({
        "objectID": "41247023", "title": "Show HN: A thing", "url": "https://thing.example",
        "author": "pg", "points": 12, "num_comments": 3, "created_at_i": POSTED,
        "updated_at": "2024-08-10T00:00:00Z", "story_text": None,
        "_tags": ["story", "author_pg", "story_41247023", "show_hn"],
    })
    assert story.fields is not None
    assert story.fields["url"] == item_page(41247023)
    assert story.fields["tags"] == ["story", "show_hn"]
    assert story.fields["engagement"] == {"score": 12, "comments": 3}
    assert story.fields["updated_at"] == datetime(2024, 8, 10, tzinfo=UTC)
    comment = parse_hit({
        "objectID": "41247100", "title": None, "story_title": "Show HN: A thing",
        "story_url": "https://thing.example", "comment_text": "<p>Nice &amp; small",
        "author": "dang", "points": None, "created_at": "2024-08-09T02:30:00.000Z",
        "_tags": ["comment", "author_dang", "story_41247023"],
    })
    assert comment.fields is not None
    assert comment.fields["title"] == "Show HN: A thing"
    assert comment.fields["text"] == "Nice & small"
    assert comment.fields["link_url"] == "https://thing.example"
    assert comment.fields["engagement"] == {}
    assert comment.fields["published_at"] == datetime(2024, 8, 9, 2, 30, tzinfo=UTC)
    assert reason(parse_hit({"title": "no id"})) == "missing_id"
    page = parse_search_page(b'{"hits": [], "page": 0, "nbPages": 0, "nbHits": 0}')
    assert page.error is None and page.nb_pages == 0
    error = parse_search_page(b'{"message": "invalid numericFilters", "status": 400}')
    assert error.error == "the answer has no list of hits: invalid numericFilters"
    # Quoted by a proxy: paging stopped after page 0. Absent: paging goes by full pages.
    quoted = parse_search_page(b'{"hits": [], "page": "1", "nbPages": "3", "nbHits": "70"}')
    assert (quoted.page, quoted.nb_pages, quoted.nb_hits) == (1, 3, 70)
    assert parse_search_page(b'{"hits": []}').nb_pages is None


def test_dates_and_counts_in_a_form_hn_does_not_send_are_reported() -> None:
    # Left out without a word before: a date as text, out of range or malformed, and a
    # negative comment count stored as engagement.
    item = parse_item({"id": 8, "type": "story", "title": "t", "time": "1700000000",
                       "score": -1, "descendants": -3}).fields
    assert item is not None and item["published_at"] is None
    assert item["engagement"] == {"score": -1}  # a score may be below zero
    assert item["dropped"] == {"published_at": "'1700000000' is not a date",
                               "engagement.comments": "-3 is negative: not a count"}
    hit = parse_hit({"objectID": "5", "title": "x", "created_at": "garbage",
                     "updated_at": "2025-13-45T00:00:00Z"}).fields
    assert hit is not None and hit["dropped"] == {
        "published_at": "'garbage' is not a date",
        "updated_at": "'2025-13-45T00:00:00Z' is not a date"}
    # A count past 18 digits is none: 10**400 failed the item in the score step (an
    # OverflowError kept as a pipeline_error rejection, the source's run failed).
    huge = parse_item({"id": 9, "type": "story", "title": "t", "time": 1700000000,
                       "score": 10**400, "descendants": 10**18 - 1}).fields
    assert huge is not None and huge["engagement"] == {"comments": 10**18 - 1}
    assert huge["dropped"]["engagement.score"].endswith("is too large to be a count")
    # A user name sent as a number is its digits (as on X); one in no form of text was
    # left out without a word.
    numbered = parse_item({"id": 10, "type": "story", "title": "t", "by": 123}).fields
    assert numbered is not None and numbered["author"] == "123" and "dropped" not in numbered
    listed = parse_hit({"objectID": "6", "title": "x", "author": ["pg"]}).fields
    assert listed is not None and listed["author"] is None
    assert listed["dropped"] == {"author": '["pg"] is not a user name'}
    # Digits of other scripts are no item id (they were stored as item?id=²).
    assert reason(parse_hit({"objectID": "²", "title": "x"})) == "missing_id"
    assert reason(parse_hit({"objectID": "١٠٧", "title": "x"})) == "missing_id"


# -- Firebase crawl --------------------------------------------------------------------


def firebase_api(items: dict[int, Callable[[ApiRequest], Reply]], ids: list[int]) -> ApiServer:
    api = ApiServer()
    api.add("/v0/topstories.json", lambda req: Reply.json(ids))
    for item_id, reply in items.items():
        api.add(f"/v0/item/{item_id}.json", reply)
    return api


def const(data: Any) -> Callable[[ApiRequest], Reply]:
    return lambda req: Reply.json(data)


def test_firebase_top_stories_with_missing_deleted_and_odd_items(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    answered: list[int] = []

    def rate_limited_once(req: ApiRequest) -> Reply:
        answered.append(1)
        if len(answered) == 1:  # Firebase's answer when a client is too fast
            return Reply.json({"error": "Too many requests"}, status=429,
                              headers={"Retry-After": "1"})
        return Reply.json({"id": 10, "type": "story", "title": "Slow down", "by": "a",
                           "score": 3, "descendants": 0, "time": POSTED})

    items = {
        1: const({"id": 1, "type": "story", "title": "Pulling Linux up by its bootstraps",
                  "by": "signa11", "score": 19, "descendants": 4, "time": POSTED,
                  "url": "https://lwn.net/Articles/983340/", "kids": [11, 12]}),
        # A user name in no form of text: the item is kept without it, and that is said.
        2: const({"id": 2, "type": "story", "title": "Ask HN: Arc?", "by": {"id": "tel"},
                  "score": 25, "descendants": 16, "time": POSTED,
                  "text": "<i>or</i> HN<p>second &amp; last"}),
        3: const({"id": 3, "type": "job", "title": "Circle Medical is hiring", "by": 1234,
                  "score": 1, "time": POSTED, "url": "https://jobs.example/3"}),
        # 4: no route → 404, like an id the list still holds but the item store lost
        5: const(None),
        6: const({"id": 6, "deleted": True, "type": "story", "time": POSTED}),
        7: const({"id": 7, "type": "comment", "by": "norvig", "text": "Aw shucks",
                  "parent": 1, "time": POSTED}),
        8: const({"id": 8, "dead": True, "type": "story", "title": "[flagged]"}),
        9: lambda req: Reply.text("{\"id\": 9, \"type\": "),
        10: rate_limited_once,
        11: const({"id": 11, "type": "story", "title": "beyond the limit", "time": POSTED}),
    }
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    with firebase_api(items, ids) as api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-top", "kind": "hackernews", "feed": "top", "limit": 10,
            "api_base": f"{api.url}/v0",
        }])
        result = harvest("--sources", str(sources), "crawl", "hn-top", *NO_THROTTLE,
                         home=home, timeout=60)
        item_hits = {r.path for r in api.requests if r.path.startswith("/v0/item/")}
        waits = [r.at for r in api.hits("/v0/item/10.json")]
        base = f"{api.url}/v0"

    assert result.returncode == 0, result.stdout + result.stderr
    assert "/v0/item/11.json" not in item_hits and len(item_hits) == 10  # limit = 10
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT external_id, url, link_url, title, text, author, tags, engagement, "
        "to_char(published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM signals")}
    assert set(rows) == {"1", "2", "3", "10"}
    assert rows["1"] == (item_page(1), "https://lwn.net/Articles/983340/",
                         "Pulling Linux up by its bootstraps", None, "signa11", ["story"],
                         {"score": 19, "comments": 4}, "2024-08-09 02:27:21")
    assert rows["2"][3:5] == ("or HN\nsecond & last", None)
    assert rows["3"][4:7] == ("1234", ["job"], {"score": 1})  # a number: its digits
    assert len(waits) == 2 and waits[1] - waits[0] >= 0.9  # Retry-After: 1 waited out
    rejects = dict(db.execute("SELECT reason, url FROM rejects"))
    assert rejects == {"not_a_post": f"{base}/item/7.json", "invalid_json": f"{base}/item/9.json"}
    stats, errors, failures = db.execute(
        "SELECT r.stats, r.errors, s.consecutive_failures FROM crawl_runs r "
        "JOIN sources_state s ON s.source = 'hn-top'").fetchone()
    assert errors == 0 and failures == 0  # a 404 item is missing, not a failed source
    assert stats["harvest/by_source"]["hn-top"]["missing"] == 4
    assert stats["harvest/by_source"]["hn-top"]["dropped"] == {"author": 1}
    assert "(author ×1)" in " ".join(result.stdout.split())
    assert {k.rsplit("/", 1)[1]: v for k, v in stats.items()
            if k.startswith("harvest/source/hn-top/missing_")} == {
        "missing_not_found": 1, "missing_null": 1, "missing_deleted": 1, "missing_dead": 1}


def test_an_item_answer_for_another_id_is_rejected_not_stored_under_it(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    items = {1: const({"id": 999, "type": "story", "title": "someone else", "time": POSTED}),
             2: const({"id": 2, "type": "story", "title": "itself", "time": POSTED})}
    with firebase_api(items, [1, 2]) as api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-mix", "kind": "hackernews", "feed": "top", "api_base": f"{api.url}/v0"}])
        result = harvest("--sources", str(sources), "crawl", "hn-mix", *NO_THROTTLE,
                         home=home, timeout=60)
        base = f"{api.url}/v0"
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r[0] for r in db.execute("SELECT external_id FROM signals")] == ["2"]
    [(reason, url, raw)] = db.execute("SELECT reason, url, raw FROM rejects").fetchall()
    assert (reason, url, raw["asked"]) == ("id_mismatch", f"{base}/item/1.json", 1)


def test_unusable_story_list_fails_the_source(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    api = ApiServer()
    api.add("/v0/newstories.json",
            lambda req: Reply.text("<html>Service Unavailable</html>", content_type="text/html"))
    with api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-new", "kind": "hackernews", "feed": "new", "api_base": f"{api.url}/v0",
        }])
        result = harvest("--sources", str(sources), "crawl", "hn-new", *NO_THROTTLE,
                         home=home, timeout=60)
        paths = [r.path for r in api.requests]

    assert result.returncode == 1
    assert "hn-new" in result.stdout and "not JSON" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert paths == ["/robots.txt", "/v0/newstories.json"]
    assert one(db, "SELECT reason FROM rejects") == "unusable_document"
    assert one(db, "SELECT consecutive_failures FROM sources_state "
                   "WHERE source = 'hn-new'") == 1


# -- Algolia crawl ---------------------------------------------------------------------


def hit(n: int, **extra: Any) -> dict[str, Any]:
    return {"objectID": str(41200000 + n), "title": f"Rust story {n}", "author": f"user{n}",
            "url": f"https://blog.example/{n}", "points": n, "num_comments": n * 2,
            "created_at_i": POSTED + n, "story_text": None,
            "_tags": ["story", f"author_user{n}", f"story_{41200000 + n}"], **extra}


def algolia_api(pages: list[list[Any]], nb_hits: int,
                failing: Callable[[ApiRequest], bool] = lambda req: False) -> ApiServer:
    api = ApiServer()

    @api.route("/api/v1/search_by_date")
    def search(req: ApiRequest) -> Reply:
        if failing(req):
            return Reply.json({"message": "internal"}, status=500)
        page = int(req.arg("page", "0") or 0)
        hits = pages[page] if page < len(pages) else []
        return Reply.json({"hits": hits, "page": page, "nbPages": len(pages),
                           "nbHits": nb_hits, "hitsPerPage": int(req.arg("hitsPerPage") or 20),
                           "query": req.arg("query"), "params": ""})

    return api


def test_algolia_search_pages_and_only_newer_items_on_the_next_run(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    comment = {"objectID": "41299999", "comment_text": "<p>Rust &amp; Go", "author": "dang",
               "story_title": "Rust story 1", "story_url": "https://blog.example/1",
               "created_at_i": POSTED, "_tags": ["comment", "author_dang"]}
    pages = [[hit(1), hit(2), comment], [hit(3), {"title": "no objectID"}, "junk"],
             [hit(5), hit(6), hit(7)]]
    with algolia_api(pages, nb_hits=9) as api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-rust", "kind": "hackernews", "query": "rust", "tags": "(story,comment)",
            "limit": 3, "max_pages": 2, "api_base": f"{api.url}/api/v1",
        }])
        first = harvest("--sources", str(sources), "crawl", "hn-rust", *NO_THROTTLE,
                        home=home, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        last_success = one(db, "SELECT last_success FROM sources_state "
                               "WHERE source = 'hn-rust'")
        # The second run goes through `scrapy crawl`, as Scrapyd runs it.
        env = {**os.environ, "HARVEST_HOME": str(home), "HARVEST_SOURCES": str(sources)}
        second = subprocess.run(
            [sys.executable, "-m", "scrapy", "crawl", "hackernews", "-a", "source=hn-rust",
             "-s", "AUTOTHROTTLE_ENABLED=False"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 0, second.stderr[-2000:]
        searches = api.hits("/api/v1/search_by_date")

    assert [(r.arg("page"), r.arg("numericFilters")) for r in searches] == [
        ("0", None), ("1", None),  # first run: everything; max_pages = 2 stops at page 1
        ("0", f"created_at_i>{int(last_success.timestamp()) - INDEX_LAG_S}"),
        ("1", f"created_at_i>{int(last_success.timestamp()) - INDEX_LAG_S}"),
    ]
    assert {(r.arg("query"), r.arg("tags"), r.arg("hitsPerPage")) for r in searches} == {
        ("rust", "(story,comment)", "3")}
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT external_id, url, title, text, author, link_url, tags, engagement "
        "FROM signals")}
    assert set(rows) == {"41200001", "41200002", "41200003", "41299999"}
    assert rows["41200002"] == (item_page(41200002), "Rust story 2", None, "user2",
                                "https://blog.example/2", ["story"],
                                {"score": 2, "comments": 4})
    assert rows["41299999"] == (item_page(41299999), "Rust story 1", "Rust & Go", "dang",
                                "https://blog.example/1", ["comment"], {})
    # Both runs saw the same hits: stored once, re-seen once.
    assert one(db, "SELECT min(seen_count) FROM signals") == 2
    rejects = sorted(r[0] for r in db.execute("SELECT reason FROM rejects"))
    assert rejects == ["missing_id", "missing_id", "not_an_item", "not_an_item"]
    runs = db.execute("SELECT errors, stats->'harvest/source/hn-rust/unfetched' "
                      "FROM crawl_runs ORDER BY started_at").fetchall()
    assert runs == [(0, 3), (0, 3)]  # 9 hits, 6 fetched: the rest is counted, not silent


def test_search_answers_without_a_page_count_are_paged_while_pages_are_full(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A proxy or mirror that drops nbPages stopped the crawl after page 0, saying nothing.
    pages = [[hit(1), hit(2)], [hit(3), hit(4)], [hit(5)], [hit(6)]]
    api = ApiServer()

    @api.route("/api/v1/search_by_date")
    def search(req: ApiRequest) -> Reply:
        return Reply.json({"hits": pages[int(req.arg("page") or 0)]})

    with api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-mirror", "kind": "hackernews", "query": "rust", "limit": 2,
            "max_pages": 10, "api_base": f"{api.url}/api/v1"}])
        result = harvest("--sources", str(sources), "crawl", "hn-mirror", *NO_THROTTLE,
                         home=home, timeout=60)
        asked = [r.arg("page") for r in api.hits("/api/v1/search_by_date")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert asked == ["0", "1", "2"]  # page 2 is not full: the last one
    assert one(db, "SELECT count(*) FROM signals") == 5


def test_a_partly_failed_search_run_keeps_the_window(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Page 1 answered 500: the run was "partly failed", a success, and the next run asked
    # only for hits newer than its start, so page 1's older hits were never fetched.
    failing = {"on": True}
    with algolia_api([[hit(1), hit(2)], [hit(3), hit(4)]], nb_hits=4,
                     failing=lambda req: failing["on"] and req.arg("page") == "1") as api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-rust", "kind": "hackernews", "query": "rust", "limit": 2,
            "max_pages": 2, "api_base": f"{api.url}/api/v1"}])
        crawl = ("--sources", str(sources), "crawl", "hn-rust", *NO_THROTTLE,
                 "-s", "RETRY_TIMES=0")
        first = harvest(*crawl, home=home, timeout=60)
        assert "partly failed hn-rust" in first.stdout, first.stdout
        failing["on"] = False
        second = harvest(*crawl, home=home, timeout=60)
        assert second.returncode == 0, second.stdout + second.stderr
        third = harvest(*crawl, home=home, timeout=60)
        searches = [(r.arg("page"), r.arg("numericFilters"))
                    for r in api.hits("/api/v1/search_by_date")]
    started = one(db, "SELECT started_at FROM crawl_runs ORDER BY started_at LIMIT 1 OFFSET 1")
    assert third.returncode == 0
    assert searches == [("0", None), ("1", None), ("0", None), ("1", None),
                        ("0", f"created_at_i>{int(started.timestamp()) - INDEX_LAG_S}"),
                        ("1", f"created_at_i>{int(started.timestamp()) - INDEX_LAG_S}")]
    assert one(db, "SELECT count(*) FROM signals") == 4


def test_algolia_error_document_fails_and_keeps_the_window(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    api = ApiServer()
    api.add("/api/v1/search_by_date", lambda req: Reply.json(
        {"message": "invalid tags", "status": 400}, status=400))
    with api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-bad", "kind": "hackernews", "tags": "story,,",
            "api_base": f"{api.url}/api/v1",
        }])
        result = harvest("--sources", str(sources), "crawl", "hn-bad", *NO_THROTTLE,
                         "-s", "RETRY_TIMES=0", home=home, timeout=60)
    assert result.returncode == 1
    assert "failed hn-bad:" in result.stdout and "HTTP 400" in result.stdout
    # Why Algolia refused is what the operator fixes: it was only "HTTP 400".
    assert "the server says 'invalid tags'" in " ".join(result.stdout.split()), result.stdout
    state = db.execute("SELECT last_success, consecutive_failures FROM sources_state "
                       "WHERE source = 'hn-bad'").fetchone()
    assert state == (None, 1)  # no success: the next run still asks for everything
    assert one(db, "SELECT count(*) FROM signals") == 0
