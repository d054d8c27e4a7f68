"""The x spider: real crawls against a stand-in of X API v2 recent search on 127.0.0.1 into
PostgreSQL, plus the pure parser on the shapes the API documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.parsers.x import (
    SNOWFLAKE_EPOCH_MS,
    first_link,
    language,
    parse_search,
    problem_message,
    snowflake_time,
    title_of,
)
from harvester.services.localsite import LocalSite
from harvester.spiders.x import clamp_page_size
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import ROOT, harvest, write_sources
from tests.feeds import items, rss

SEARCH = "/2/tweets/search/recent"
TOKEN = "test-bearer-8c1f0e"
WITH_TOKEN = {"X_BEARER_TOKEN": TOKEN}


def snowflake(minutes_ago: float, seq: int = 0) -> str:
    """A tweet id minted ``minutes_ago`` (ids encode their creation time)."""
    ms = int((time.time() - minutes_ago * 60) * 1000)
    return str(((ms - SNOWFLAKE_EPOCH_MS) << 22) + seq)


def tweet(tweet_id: str, text: str, author_id: str = "u1", **extra: Any) -> dict[str, Any]:
    created = snowflake_time(tweet_id)
    assert created is not None
    return {"id": tweet_id, "text": text, "author_id": author_id, "lang": "en",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conversation_id": tweet_id, "edit_history_tweet_ids": [tweet_id],
            "public_metrics": {"retweet_count": 1, "reply_count": 2, "like_count": 3,
                               "quote_count": 0, "bookmark_count": 0,
                               "impression_count": 40},
            **extra}


def page(tweets: list[dict[str, Any]], users: dict[str, str] | None = None,
         next_token: str | None = None, **extra: Any) -> Reply:
    """A search page as X answers it, with X's rate-limit headers (450 per 15 minutes)."""
    meta: dict[str, Any] = {"result_count": len(tweets)}
    if tweets:
        ids = [t["id"] for t in tweets if "id" in t]
        meta |= {"newest_id": ids[0], "oldest_id": ids[-1]}
    if next_token:
        meta["next_token"] = next_token
    body: dict[str, Any] = {"meta": meta, **extra}
    if tweets:
        body["data"] = tweets
    if users:
        body["includes"] = {"users": [{"id": k, "username": v, "name": v.title()}
                                      for k, v in users.items()]}
    return Reply.json(body, headers=limit_headers(remaining=449))


def limit_headers(remaining: int, reset_in: float = 900) -> dict[str, str]:
    return {"x-rate-limit-limit": "450", "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(int(time.time() + reset_in))}


def x_source(name: str, api: ApiServer, query: str = "zero-day", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "x", "query": query, "api_base": f"{api.url}/2", **extra}


def one(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def all_output(result: subprocess.CompletedProcess[str], home: Path) -> str:
    logs = "".join(p.read_text(errors="replace") for p in home.rglob("*.log"))
    return result.stdout + result.stderr + logs


# -- real crawls -------------------------------------------------------------------------


def test_pages_are_followed_stored_and_the_next_run_resumes_from_since_id(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    newest, second, older = snowflake(30, 2), snowflake(40, 1), snowflake(50)
    first_tweet = tweet(
        newest, "Zero-day in &lt;libfoo&gt; &amp; friends\nPatch now.", "u1",
        entities={
            "hashtags": [{"start": 0, "end": 5, "tag": "infosec"}],
            "urls": [
                {"url": "https://t.co/m", "expanded_url":
                 f"https://x.com/alice/status/{newest}/photo/1",
                 "display_url": "pic.x.com/m", "media_key": "3_1"},
                {"url": "https://t.co/a", "expanded_url": "https://news.example.org/libfoo",
                 "display_url": "news.example.org/libfoo"},
            ]})
    pages = {
        None: page([first_tweet, tweet(second, "second one", "u2")],
                   users={"u1": "alice", "u2": "bob"}, next_token="tok-2"),
        # The first tweet again, its author renamed since: still one tweet.
        "tok-2": page([tweet(older, "author gone", "u9"), first_tweet],
                      users={"u1": "alice_renamed"}),
    }

    def search(req: ApiRequest) -> Reply:
        if req.arg("since_id"):
            return page([])  # nothing new since the last run
        return pages[req.arg("next_token")]

    api.add(SEARCH, search)
    sources = write_sources(tmp_path / "s.toml",
                            [x_source("xs", api, limit=5, max_pages=3)])

    first = harvest("--sources", str(sources), "crawl", "xs", home=home, env=WITH_TOKEN)

    assert first.returncode == 0, first.stdout + first.stderr
    hits = api.hits(SEARCH)
    assert [h.arg("next_token") for h in hits] == [None, "tok-2"]
    assert {h.headers["authorization"] for h in hits} == {f"Bearer {TOKEN}"}
    assert hits[0].arg("query") == "zero-day"
    assert hits[0].arg("max_results") == "10"  # limit 5 clamped to the API's minimum
    # The reposted tweet too: a repost's own text is cut at 140 characters.
    assert hits[0].arg("expansions") == (
        "author_id,referenced_tweets.id,referenced_tweets.id.author_id")
    assert "referenced_tweets" in (hits[0].arg("tweet.fields") or "")
    assert "public_metrics" in (hits[0].arg("tweet.fields") or "")
    assert hits[0].arg("since_id") is None
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT external_id, url, author, title, text, link_url, tags, language, engagement "
        "FROM signals")}
    assert set(rows) == {newest, second, older}
    assert one(db, "SELECT count(*) FROM signals") == 3
    assert one(db, "SELECT stored, duplicates FROM crawl_runs") == (3, 1)
    url, author, title, text, link, tags, lang, engagement = rows[newest]
    assert (url, author) == (f"https://x.com/alice/status/{newest}", "alice")
    assert title == "Zero-day in <libfoo> & friends"
    assert text == "Zero-day in <libfoo> & friends\nPatch now."
    assert link == "https://news.example.org/libfoo"  # the photo link is skipped
    assert (tags, lang) == (["infosec"], "en")
    assert engagement["like_count"] == 3 and engagement["impression_count"] == 40
    assert rows[older][:2] == (f"https://x.com/i/web/status/{older}", None)
    published = one(db, "SELECT published_at FROM signals WHERE external_id = %s", newest)
    assert abs(published - snowflake_time(newest)) < timedelta(seconds=1)
    assert one(db, "SELECT cursor - 'since' FROM sources_state WHERE source = 'xs'") == {
        "since_id": newest}
    assert TOKEN not in all_output(first, home)

    again = harvest("--sources", str(sources), "crawl", "xs", home=home, env=WITH_TOKEN)

    assert again.returncode == 0, again.stdout + again.stderr
    assert api.hits(SEARCH)[-1].arg("since_id") == newest
    assert len(api.hits(SEARCH)) == 3
    # A quiet run keeps the resume point instead of starting over.
    assert one(db, "SELECT cursor - 'since', consecutive_failures FROM sources_state") == (
        {"since_id": newest}, 0)


def test_partial_errors_are_kept_and_do_not_fail_the_run(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    errors = [
        {"parameter": "entities.mentions.username", "resource_id": "gone_user",
         "value": "gone_user", "detail": "User has been suspended: [gone_user].",
         "title": "Forbidden", "resource_type": "user",
         "type": "https://api.twitter.com/2/problems/resource-not-found"},
        {"parameter": "author_id", "resource_id": "u7", "value": "u7",
         "detail": "Could not find user with author_id: [u7].", "title": "Not Found Error",
         "resource_type": "user",
         "type": "https://api.twitter.com/2/problems/resource-not-found"},
    ]
    api.add(SEARCH, lambda req: page(
        [tweet(snowflake(5), "hello @gone_user"), tweet(snowflake(6), "{broken", "u7"),
         {"text": "a tweet without its id"}],
        users={"u1": "carol"}, errors=errors))
    sources = write_sources(tmp_path / "s.toml", [x_source("xp", api)])
    env = {**os.environ, **WITH_TOKEN, "HARVEST_HOME": str(home),
           "HARVEST_SOURCES": str(sources)}

    # The way Scrapyd runs it.
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "x", "-a", "source=xp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr[-2000:]
    assert one(db, "SELECT count(*) FROM signals") == 2
    rejects = db.execute("SELECT reason, field, raw->>'detail' FROM rejects "
                         "ORDER BY reason, field").fetchall()
    assert rejects == [
        ("api_partial_error", "author_id", "Could not find user with author_id: [u7]."),
        ("api_partial_error", "entities.mentions.username",
         "User has been suspended: [gone_user]."),
        ("missing_id", "id", None),
    ]
    run = db.execute("SELECT errors, rejected, stats->'harvest/source/xp/partial_errors' "
                     "FROM crawl_runs").fetchone()
    assert run == (0, 3, 2)
    assert one(db, "SELECT consecutive_failures, last_success IS NOT NULL "
                   "FROM sources_state") == (0, True)
    assert TOKEN not in result.stdout + result.stderr


def test_error_documents_fail_the_source_with_one_clear_line(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    def search(req: ApiRequest) -> Reply:
        if req.arg("query") == "bad (":
            return Reply.json({
                "errors": [{"parameters": {"query": ["bad ("]},
                            "message": "There were errors processing your request: "
                                       "Unmatched parenthesis (at position 5)"}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request"}, status=400)
        return Reply.json({"title": "Unauthorized", "type": "about:blank", "status": 401,
                           "detail": "Unauthorized"}, status=401)

    api.add(SEARCH, search)
    sources = write_sources(tmp_path / "s.toml", [
        x_source("denied", api), x_source("badq", api, query="bad ("),
    ])

    result = harvest("--sources", str(sources), "crawl", "denied", "badq", home=home,
                     env=WITH_TOKEN)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(ln.startswith("failed denied:") and
               ln.endswith("X rejected the bearer token (401): check X_BEARER_TOKEN")
               for ln in lines), result.stdout
    assert any(ln.startswith("failed badq:") and
               "X rejected the request (HTTP 400): There were errors processing your "
               "request: Unmatched parenthesis" in ln for ln in lines), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert TOKEN not in all_output(result, home)
    assert len(api.hits(SEARCH)) == 2  # an error document is not retried
    assert dict(db.execute("SELECT source, consecutive_failures FROM sources_state")) == {
        "denied": 1, "badq": 1}
    assert one(db, "SELECT count(*) FROM signals") == 0


def test_without_a_token_x_is_skipped_and_the_other_sources_run(
    api: ApiServer, site: LocalSite, db: psycopg.Connection[Any], home: Path,
    tmp_path: Path
) -> None:
    (site.root / "f.xml").write_text(rss(items("feed", 2)))
    sources = write_sources(tmp_path / "s.toml", [
        x_source("xs", api),
        {"name": "news", "kind": "feed", "urls": [f"{site.url}/f.xml"]},
    ])

    result = harvest("--sources", str(sources), "crawl", "--all", home=home,
                     env={"X_BEARER_TOKEN": ""})

    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [ln for ln in result.stdout.splitlines() if "xs" in ln and "skipped" in ln]
    assert skipped == ["skipped xs: X_BEARER_TOKEN is not set; export it to crawl X sources"]
    assert api.requests == []
    assert one(db, "SELECT count(*) FROM signals WHERE source = 'news'") == 2
    assert [r[0] for r in db.execute("SELECT source FROM sources_state")] == ["news"]


def test_a_429_waits_for_the_rate_limit_reset_before_asking_again(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    def search(req: ApiRequest) -> Reply:
        if len(api.hits(SEARCH)) == 1:
            # X: the window is used up until x-rate-limit-reset (epoch seconds).
            reset = int(time.time()) + 3
            return Reply.json({"title": "Too Many Requests", "detail": "Too Many Requests",
                               "type": "about:blank", "status": 429}, status=429,
                              headers={"x-rate-limit-limit": "450",
                                       "x-rate-limit-remaining": "0",
                                       "x-rate-limit-reset": str(reset)})
        return page([tweet(snowflake(1), "after the wait")])

    api.add(SEARCH, search)
    sources = write_sources(tmp_path / "s.toml", [x_source("xr", api)])

    result = harvest("--sources", str(sources), "crawl", "xr", home=home, env=WITH_TOKEN)

    assert result.returncode == 0, result.stdout + result.stderr
    hits = api.hits(SEARCH)
    assert len(hits) == 2
    assert hits[1].at - hits[0].at >= 1.8  # reset was 2-3 s ahead; not hammered
    assert one(db, "SELECT title FROM signals") == "after the wait"
    assert one(db, "SELECT errors, (stats->>'harvest/waits')::int FROM crawl_runs") == (0, 1)


def test_a_since_id_older_than_the_search_window_is_dropped(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    stale = snowflake(8 * 24 * 60)
    db.execute("INSERT INTO sources_state (source, last_success, cursor) VALUES "
               "('xo', now() - interval '8 days', %s)", (json.dumps({"since_id": stale}),))
    fresh = snowflake(10)
    api.add(SEARCH, lambda req: page([tweet(fresh, "fresh")]))
    sources = write_sources(tmp_path / "s.toml", [x_source("xo", api)])

    result = harvest("--sources", str(sources), "crawl", "xo", home=home, env=WITH_TOKEN)

    assert result.returncode == 0, result.stdout + result.stderr
    assert api.hits(SEARCH)[0].arg("since_id") is None
    assert one(db, "SELECT cursor - 'since' FROM sources_state") == {"since_id": fresh}


def test_a_search_too_long_to_send_fails_its_source_in_one_line(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Scrapy dropped the request (its URL past URLLENGTH_LIMIT) with an INFO line in the
    # log: zeros, exit 0 and "succeeded" run after run, until the source was disabled.
    query = " OR ".join(f"地震速報{i:03d}" for i in range(300))  # 2,700 characters
    api.add(SEARCH, lambda req: page([tweet(snowflake(1), "never asked")]))
    sources = write_sources(tmp_path / "s.toml", [x_source("quake", api, query=query)])
    result = harvest("--sources", str(sources), "crawl", "quake", home=home, env=WITH_TOKEN)
    assert result.returncode == 1, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert f"failed quake: {api.url}/2/tweets/search/recent?…: not sent: its URL is" in said
    assert "longer than URLLENGTH_LIMIT (8,192)" in said, said
    assert api.hits(SEARCH) == []
    stats = json.loads(harvest("stats", "--json", home=home).stdout)
    assert stats["sources"]["quake"]["last_run_outcome"] == "failed"


def test_an_empty_page_with_a_next_token_stops_paging(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Empty pages that still carried a next_token were followed to max_pages, each a
    # request off the rate limit.
    pages = {None: page([tweet(snowflake(5), "one")], users={"u1": "alice"}, next_token="t2"),
             "t2": page([], next_token="t3"), "t3": page([], next_token="t4")}
    api.add(SEARCH, lambda req: pages.get(req.arg("next_token"), page([])))
    sources = write_sources(tmp_path / "s.toml", [x_source("xe", api, max_pages=5)])
    result = harvest("--sources", str(sources), "crawl", "xe", home=home, env=WITH_TOKEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.arg("next_token") for r in api.hits(SEARCH)] == [None, "t2"]
    assert one(db, "SELECT count(*) FROM signals") == 1
    assert "X sent an empty page with a next_token; paging stopped" in all_output(result, home)


def test_a_huge_rejected_object_keeps_only_its_start_as_evidence(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # `data` as one object instead of a list: the whole of it (5 MB a page) went into
    # rejects.raw, per page, per run.
    api.add(SEARCH, lambda req: Reply.json(
        {"data": {"id": "1", "text": "x" * 200_000}, "meta": {"result_count": 1}},
        headers=limit_headers(remaining=449)))
    sources = write_sources(tmp_path / "s.toml", [x_source("xbig", api)])
    harvest("--sources", str(sources), "crawl", "xbig", home=home, env=WITH_TOKEN)
    reason, raw = one(db, "SELECT reason, raw FROM rejects")
    assert reason == "data_not_a_list"
    assert raw["chars"] > 200_000 and len(raw["head"]) == 4_000
    assert raw["head"].startswith('{"data": {"id": "1", "text": "xxx')


@pytest.mark.parametrize("newest", ["9" * 40, "abc", str(2**64 - 1)])
def test_a_newest_id_that_is_no_tweet_id_does_not_become_the_cursor(
    newest: str, api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # The largest u64 is an id minted in 2150: kept, it was sent on every run after.
    # Stored as since_id, 40 nines stopped every later run (an OverflowError before the
    # first request, exit 0); "abc" would have been sent to X on every run.
    fresh = snowflake(10)
    answer = json.loads(page([tweet(fresh, "fresh")], users={"u1": "alice"}).body)
    answer["meta"]["newest_id"] = newest
    api.add(SEARCH, lambda req: Reply.json(answer, headers=limit_headers(remaining=449)))
    sources = write_sources(tmp_path / "s.toml", [x_source("xn", api)])
    for run in (1, 2):
        result = harvest("--sources", str(sources), "crawl", "xn", home=home, env=WITH_TOKEN)
        assert result.returncode == 0, (run, result.stdout + result.stderr)
        assert "stopped early" not in result.stdout
    assert api.hits(SEARCH)[1].arg("since_id") is None
    assert one(db, "SELECT cursor - 'since' FROM sources_state") == {}
    assert one(db, "SELECT count(*) FROM rejects WHERE reason = 'invalid_newest_id'") == 2
    assert one(db, "SELECT title FROM signals") == "fresh"


def test_a_next_token_handed_out_again_stops_paging(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # The same next_token on every page was followed until max_pages: five identical
    # requests against the rate budget, and no word of it.
    one_tweet = tweet(snowflake(5), "looping")
    api.add(SEARCH, lambda req: page([one_tweet], next_token="SAME"))
    sources = write_sources(tmp_path / "s.toml", [x_source("xl", api, max_pages=5)])
    result = harvest("--sources", str(sources), "crawl", "xl", home=home, env=WITH_TOKEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [h.arg("next_token") for h in api.hits(SEARCH)] == [None, "SAME"]
    assert one(db, "SELECT (stats->>'harvest/source/xl/paging_loop')::int "
                   "FROM crawl_runs") == 1


def test_a_stored_since_id_that_is_no_tweet_id_is_passed_over(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    db.execute("INSERT INTO sources_state (source, cursor) VALUES ('xb', %s)",
               (json.dumps({"since_id": "9" * 40}),))
    api.add(SEARCH, lambda req: page([tweet(snowflake(5), "new")]))
    sources = write_sources(tmp_path / "s.toml", [x_source("xb", api)])
    result = harvest("--sources", str(sources), "crawl", "xb", home=home, env=WITH_TOKEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert api.hits(SEARCH)[0].arg("since_id") is None
    assert one(db, "SELECT (stats->>'harvest/source/xb/since_id_invalid')::int "
                   "FROM crawl_runs") == 1


# -- the parser --------------------------------------------------------------------------


def test_usernames_dates_and_languages_x_should_not_send_are_reported() -> None:
    good, odd, third = snowflake(3), snowflake(2), snowflake(1)
    parsed = parse_search(json.dumps({
        "data": [tweet(good, "one", author_id="u1"),
                 tweet(odd, "two", author_id="u2", created_at="2025-02-30T00:00:00Z",
                       lang="x" * 5000),
                 tweet(third, "three", author_id="u3")],
        "includes": {"users": [{"id": "u1", "username": 123},
                               {"id": "u2", "username": "a b?c#d"},
                               {"id": "u3", "username": {"name": "x"}}]},
        "errors": ["something went wrong"],
        "meta": {"result_count": 3}}).encode())
    first, second, last = parsed.tweets
    # No form of text at all: reported too (it was left out without a word).
    assert (last["author"], last["dropped"]) == (
        None, {"author": """'{"name": "x"}' is not an X username"""})
    # A number as username is text; one that is no username leaves the URL on the id.
    assert (first["author"], first["url"]) == ("123", f"https://x.com/123/status/{good}")
    assert (second["author"], second["url"]) == (None, f"https://x.com/i/web/status/{odd}")
    assert second["published_at"] is None and second["language"] is None
    assert second["dropped"] == {
        "author": "'a b?c#d' is not an X username",
        "published_at": "'2025-02-30T00:00:00Z' is not a date",
        "language": f"{'x' * 80!r} is not a language tag"}
    assert "dropped" not in first
    assert parsed.errors == [{"detail": "something went wrong"}]
    bad_id = parse_search(json.dumps({"data": [{"id": "\u00b2", "text": "t"}],
                                      "meta": {}}).encode())
    assert [r.reason for r in bad_id.rejects] == ["invalid_id"]
    # Too long for int() (over 4,300 digits raised a ValueError): no tweet id either.
    long_id = parse_search(json.dumps({"data": [{"id": "9" * 5000, "text": "t"}],
                                       "meta": {"newest_id": "9" * 5000}}).encode())
    assert [r.reason for r in long_id.rejects] == ["invalid_newest_id", "invalid_id"]
    # Keys X does not document became field names (labels of /metrics), one series each.
    odd_metrics = {"like_count": 3, **{f"k{i:02d}": "lots" for i in range(12)}}
    [fields] = parse_search(json.dumps({"data": [tweet(good, "m", public_metrics=odd_metrics)],
                                        "meta": {}}).encode()).tweets
    assert fields["engagement"] == {"like_count": 3}
    assert fields["dropped"] == {
        "engagement.other": "12 counts X does not document: k00, k01, k02, k03, k04 …"}



def test_parser_reads_zero_results_broken_and_error_only_bodies() -> None:
    empty = parse_search(b'{"meta": {"result_count": 0}}')
    assert (empty.problem, empty.tweets, empty.result_count) == (None, [], 0)
    assert parse_search(b"<html>oops</html>").problem == "X answered with a body that is not JSON"
    assert parse_search(b"[1, 2]").problem == "X answered with JSON that is not an object"
    only_errors = parse_search(json.dumps({"errors": [
        {"message": "Invalid 'since_id'", "parameters": {"since_id": ["1"]}}]}).encode())
    assert only_errors.problem == "X answered without results: Invalid 'since_id'"
    odd = parse_search(b'{"data": {"id": "1"}, "meta": {"result_count": 1}}')
    assert [r.reason for r in odd.rejects] == ["data_not_a_list"]


def test_problem_messages_are_one_sentence() -> None:
    assert problem_message(401, b"") == "X rejected the bearer token (401): check X_BEARER_TOKEN"
    forbidden = json.dumps({
        "client_id": "1", "reason": "client-not-enrolled", "title": "Client Forbidden",
        "detail": "This request must be made using an approved developer account.",
        "type": "https://api.twitter.com/2/problems/client-forbidden"}).encode()
    assert problem_message(403, forbidden) == (
        "X refused access (HTTP 403): This request must be made using an approved "
        "developer account.")
    assert problem_message(500, b"not json") == "X answered (HTTP 500)"


def test_titles_languages_and_links() -> None:
    long = "word " * 40
    title = title_of("\n  " + long + "\nsecond")
    assert title is not None and len(title) <= 120 and title.endswith("word…")
    assert title_of("short\nline two") == "short"
    assert title_of("") is None
    assert [language(v) for v in ("en", "und", "qme", "zxx", "in", None)] == [
        "en", None, None, None, "id", None]
    assert first_link({"urls": [{"display_url": "pic.twitter.com/x",
                                 "expanded_url": "https://twitter.com/a/status/1/photo/1"},
                                {"expanded_url": "https://a.example/x",
                                 "unwound_url": "https://b.example/final"}]}) == (
        "https://b.example/final")
    assert first_link({}) is None
    assert [clamp_page_size(n) for n in (None, 1, 50, 500)] == [100, 10, 50, 100]


def test_long_posts_use_the_note_tweet_text() -> None:
    full = "x" * 300
    parsed = parse_search(json.dumps({
        "data": [{"id": "5", "text": "x" * 270 + "… https://t.co/z",
                  "note_tweet": {"text": full}}],
        "meta": {"result_count": 1, "newest_id": "5"}}).encode())
    assert parsed.tweets[0]["text"] == full
    assert parsed.tweets[0]["published_at"] is None
    assert snowflake_time("not-an-id") is None
    # A real id and its created_at (2021-09-22T16:37:29.000Z): same second.
    assert snowflake_time("1440716895355764743") == datetime(
        2021, 9, 22, 16, 37, 29, 735000, tzinfo=UTC)


def test_hashtags_are_text_whatever_their_json_type() -> None:
    # A number as a tag passed the parser and made validate raise: the tweet was lost and
    # the page's run failed.
    parsed = parse_search(json.dumps({
        "data": [{"id": "7", "text": "tags", "entities": {"hashtags": [
            None, {"tag": 5}, {"tag": "infosec"}, {"tag": ""}, {"tag": ["x"]}, {}]}}],
        "meta": {"result_count": 1, "newest_id": "7"}}).encode())
    assert parsed.tweets[0]["tags"] == ["5", "infosec"]


def test_a_body_that_is_not_an_x_answer_is_kept_as_evidence(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Counted as a failure only: reddit and hackernews keep the same answer as a rejection.
    api.add(SEARCH, lambda _: Reply.text("<html><body>Down for maintenance</body></html>",
                                         content_type="text/html"))
    sources = write_sources(tmp_path / "s.toml", [x_source("html", api)])
    result = harvest("--sources", str(sources), "crawl", "html", home=home, env=WITH_TOKEN)
    assert result.returncode == 1
    assert "failed html:" in result.stdout and "a body that is not JSON" in result.stdout
    reason, field, raw = db.execute("SELECT reason, field, raw FROM rejects").fetchone()
    assert (reason, field) == ("unusable_document", "document")
    assert raw["head"].startswith("<html><body>Down for maintenance")
