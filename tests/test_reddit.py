"""Reddit: the listing parser, listing URLs and the User-Agent, and real crawls against a
stand-in API answering in Reddit's documented shapes (Listing of t3 children, ``after``
cursors, ``X-Ratelimit-*`` headers, error documents, OAuth client credentials)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
from psycopg.types.json import Jsonb
from scrapy.settings import Settings

from harvester.parsers.reddit import parse_listing
from harvester.sources import Source
from harvester.spiders.reddit import RedditConfig, listing_url
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import ROOT, harvest, write_sources

CREATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
USERNAME = "harvest_test"
UA = f"python:harvester:0.1.0 (by /u/{USERNAME})"
# Crawls in these tests: no AutoThrottle start delay between a source's pages.
FAST = ("-s", "AUTOTHROTTLE_ENABLED=false", "-s", f"HARVEST_REDDIT_USERNAME={USERNAME}")


def post(pid: str, **data: Any) -> dict[str, Any]:
    """A t3 child as Reddit's listing endpoints return it (the fields we read, and a few
    we don't)."""
    base: dict[str, Any] = {
        "id": pid, "name": f"t3_{pid}", "subreddit": "python",
        "subreddit_name_prefixed": "r/python", "title": f"Post {pid}", "author": "alice",
        "selftext": "", "is_self": False, "url": f"https://example.org/{pid}",
        "domain": "example.org", "permalink": f"/r/python/comments/{pid}/post_{pid}/",
        "created_utc": CREATED.timestamp(), "edited": False, "score": 42,
        "num_comments": 7, "upvote_ratio": 0.93, "link_flair_text": None, "over_18": False,
        "stickied": False, "removed_by_category": None, "thumbnail": "default",
    }
    base.update(data)
    return {"kind": "t3", "data": base}


def listing(children: list[dict[str, Any]], after: str | None = None) -> dict[str, Any]:
    return {"kind": "Listing", "data": {"after": after, "dist": len(children),
                                       "modhash": "", "geo_filter": "",
                                       "children": children, "before": None}}


def limits(used: int) -> dict[str, str]:
    """Reddit's rate-limit headers (remaining is a float string, reset in seconds)."""
    return {"X-Ratelimit-Used": str(used), "X-Ratelimit-Remaining": f"{100 - used}.0",
            "X-Ratelimit-Reset": "412"}


def source(name: str, api: ApiServer, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "reddit", "api_base": api.url, **extra}


def count(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def logs(home: Path) -> str:
    return "".join(p.read_text() for p in (home / "logs").glob("*.log"))


# -- parser ------------------------------------------------------------------------------


def test_listing_children_become_signal_fields() -> None:
    body = json.dumps(listing([
        post("a1", link_flair_text="News", over_18=True),
        post("b2", is_self=True, url="https://www.reddit.com/r/python/comments/b2/post_b2/",
             selftext="Body with **markdown** & raw_json text", author="[deleted]",
             edited=CREATED.timestamp() + 3600),
        post("c3", url="/r/learnpython/comments/zz9/original/", score=0, upvote_ratio=0.5),
    ], after="t3_c3")).encode()

    parsed = parse_listing(body)

    assert parsed.error is None and parsed.rejects == [] and parsed.after == "t3_c3"
    first, self_post, crosspost = parsed.posts
    assert first == {
        "external_id": "t3_a1", "url": "https://www.reddit.com/r/python/comments/a1/post_a1/",
        "link_url": "https://example.org/a1", "title": "Post a1", "text": None,
        "author": "alice", "published_at": CREATED, "updated_at": None,
        "tags": ["python", "News", "nsfw"],
        "engagement": {"score": 42, "num_comments": 7, "upvote_ratio": 0.93},
    }
    assert self_post["link_url"] is None and self_post["author"] is None
    assert self_post["text"] == "Body with **markdown** & raw_json text"
    assert self_post["updated_at"] == CREATED + timedelta(hours=1)
    assert crosspost["link_url"] == "https://www.reddit.com/r/learnpython/comments/zz9/original/"
    assert crosspost["engagement"] == {"score": 0, "num_comments": 7, "upvote_ratio": 0.5}


@pytest.mark.parametrize("permalink", ["//evil.example/x", "/r/p/comments/a/\x00x/", "/"])
def test_a_permalink_that_is_no_reddit_path_is_rejected(permalink: str) -> None:
    # "//evil.example/x" was stored as https://www.reddit.com//evil.example/x.
    parsed = parse_listing(json.dumps(listing([post("a", permalink=permalink)])).encode())
    assert parsed.posts == []
    assert [(r.reason, r.field) for r in parsed.rejects] == [("invalid_field", "permalink")]


def test_unusable_children_are_rejected_with_a_reason() -> None:
    children: list[Any] = [
        {"kind": "t1", "data": {"name": "t1_x", "body": "a comment"}},
        {"kind": "t5", "data": {"name": "t5_2qh0y", "display_name": "python"}},
        post("rm", removed_by_category="moderator"),
        post("rs", is_self=True, selftext="[removed]"),
        post("dl", removed_by_category="deleted", title="[deleted by user]"),
        post("ds", is_self=True, selftext="[deleted]", author="[deleted]"),
        post("nn", name=None),
        post("bn", name="t1_bn"),
        post("np", permalink=None),
        post("rp", permalink="https://elsewhere.example/p"),
        post("nt", title="  "),
        post("nc", created_utc=None),
        post("bc", created_utc="yesterday"),
        "not an object",
        post("ok"),
    ]
    parsed = parse_listing(json.dumps(listing(children)).encode())

    assert [p["external_id"] for p in parsed.posts] == ["t3_ok"]
    assert [(r.reason, r.field) for r in parsed.rejects] == [
        ("not_a_post", "kind"), ("not_a_post", "kind"),
        ("removed_post", "removed_by_category"), ("removed_post", "removed_by_category"),
        ("deleted_post", "removed_by_category"), ("deleted_post", "removed_by_category"),
        ("missing_field", "name"), ("invalid_field", "name"),
        ("missing_field", "permalink"), ("invalid_field", "permalink"),
        ("missing_field", "title"), ("missing_field", "created_utc"),
        ("invalid_field", "created_utc"), ("not_a_post", "kind"),
    ]
    assert parsed.rejects[2].raw["name"] == "t3_rm"
    assert parsed.rejects[2].raw["removed_by_category"] == "moderator"
    assert parsed.rejects[0].raw == {"kind": "t1", "name": "t1_x"}


@pytest.mark.parametrize(("body", "unusable", "error"), [
    (b'{"kind": "Listing", "data": {"children": [', True, "not JSON"),
    (b"<html>Our CDN was unable to reach our servers</html>", True, "not JSON"),
    (json.dumps([listing([]), listing([])]).encode(), True, "not a Reddit Listing (an array)"),
    (b'{"kind": "t3", "data": {}}', True, "kind 't3'"),
    (b'{"kind": "Listing", "data": {"after": null}}', True,
     "not a Reddit Listing (kind 'Listing', but its data.children is null, not an array)"),
    (b'{"kind": "Listing", "data": {"children": {}}}', True,
     "its data.children is an object, not an array"),
    (b'{"kind": "Listing", "data": []}', True, "kind 'Listing', but its data is an array"),
    (b'{"reason": "private", "message": "Forbidden", "error": 403}', False,
     "the subreddit is private (Forbidden)"),
    (b'{"message": "Too Many Requests", "error": 429}', False, "Too Many Requests"),
])
def test_unusable_documents_say_why(body: bytes, unusable: bool, error: str) -> None:
    parsed = parse_listing(body)
    assert parsed.posts == [] and parsed.error is not None
    assert error in parsed.error and parsed.unusable is unusable


def test_listing_urls() -> None:
    def url(oauth: bool = False, after: str | None = None, **options: Any) -> str:
        return listing_url(Source(name="r", kind="reddit", **options), oauth=oauth,
                           after=after, count=25 if after else 0)

    assert url(subreddit="python") == (
        "https://www.reddit.com/r/python/hot.json?raw_json=1&limit=100")
    assert url(subreddit="python", listing="top", time_filter="week", limit=500,
               after="t3_x") == ("https://www.reddit.com/r/python/top.json?raw_json=1"
                                 "&limit=100&t=week&after=t3_x&count=25")
    assert url(True, subreddit="a+b", listing="rising", time_filter="day", limit=10) == (
        "https://oauth.reddit.com/r/a+b/rising?raw_json=1&limit=10")
    assert url(listing="search", query="rust async", api_base="http://127.0.0.1:1") == (
        "http://127.0.0.1:1/search.json?raw_json=1&limit=100&q=rust+async&sort=new")
    assert url(True, listing="search", subreddit="python", query="x", time_filter="all") == (
        "https://oauth.reddit.com/r/python/search?raw_json=1&limit=100&q=x&sort=new"
        "&restrict_sr=1&t=all")


def test_user_agent_follows_reddits_format() -> None:
    def agent(username: str | None) -> str:
        settings = Settings({"HARVEST_REDDIT_USERNAME": username} if username else {})
        return RedditConfig.from_settings(settings).user_agent

    assert agent("spez_fan") == "python:harvester:0.1.0 (by /u/spez_fan)"
    assert agent("/u/spez_fan") == agent("u/spez_fan") == agent("spez_fan")
    assert agent(None) == "python:harvester:0.1.0"
    with pytest.raises(ValueError, match="is not a Reddit username"):
        agent("two words")


# -- crawls ------------------------------------------------------------------------------


def test_public_listing_is_paged_and_stored(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    pages = {
        None: listing([post("a1", link_flair_text="Showcase"),
                       {"kind": "t1", "data": {"name": "t1_c", "body": "stray comment"}},
                       post("rm", removed_by_category="moderator"),
                       post("b2", is_self=True, selftext="Self text")], after="t3_b2"),
        "t3_b2": listing([post("c3"), post("nt", title="")], after=None),
    }
    api.add("/r/python/hot.json",
            lambda r: Reply.json(pages[r.arg("after")], headers=limits(len(api.requests))))
    sources = write_sources(tmp_path / "s.toml",
                            [source("py", api, subreddit="python", limit=500, max_pages=5)])

    result = harvest("--sources", str(sources), "crawl", "py", *FAST, home=home)

    assert result.returncode == 0, result.stdout + result.stderr
    hits = api.hits("/r/python/hot.json")
    assert len(hits) == 2  # after=null on page 2 ends the listing before max_pages
    assert [(h.arg("raw_json"), h.arg("limit"), h.arg("after"), h.arg("count")) for h in hits] \
        == [("1", "100", None, None), ("1", "100", "t3_b2", "4")]
    assert {h.headers["user-agent"] for h in hits} == {UA}
    assert not any("authorization" in h.headers for h in hits)
    rows = db.execute("SELECT external_id, url, link_url, title, text, author, published_at, "
                      "tags, engagement FROM signals ORDER BY external_id").fetchall()
    assert [r[0] for r in rows] == ["t3_a1", "t3_b2", "t3_c3"]
    assert rows[0][1:] == (
        "https://www.reddit.com/r/python/comments/a1/post_a1/", "https://example.org/a1",
        "Post a1", None, "alice", CREATED, ["python", "Showcase"],
        {"score": 42, "num_comments": 7, "upvote_ratio": 0.93})
    assert rows[1][2] is None and rows[1][4] == "Self text"
    reasons = dict(db.execute("SELECT reason, count(*) FROM rejects GROUP BY reason"))
    assert reasons == {"not_a_post": 1, "removed_post": 1, "missing_field": 1}
    run = db.execute("SELECT sources, scraped, stored, rejected, errors FROM crawl_runs")
    assert run.fetchall() == [(["py"], 3, 3, 3, 0)]


def test_paging_stops_at_max_pages_with_scrapy_crawl(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:

    def top(request: ApiRequest) -> Reply:
        n = len(api.hits("/r/rust/top.json"))
        return Reply.json(listing([post(f"p{n}x{i}") for i in range(3)], after=f"t3_p{n}x2"),
                          headers=limits(n))

    api.add("/r/rust/top.json", top)
    sources = write_sources(tmp_path / "s.toml", [source(
        "rs", api, subreddit="rust", listing="top", time_filter="week", limit=3, max_pages=2)])
    env = {**os.environ, "HARVEST_HOME": str(home), "HARVEST_SOURCES": str(sources)}

    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "reddit", "-a", "source=rs",
         "-s", "AUTOTHROTTLE_ENABLED=false", "-s", f"HARVEST_REDDIT_USERNAME={USERNAME}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr[-2000:]
    hits = api.hits("/r/rust/top.json")
    assert [(h.arg("t"), h.arg("limit"), h.arg("after")) for h in hits] == [
        ("week", "3", None), ("week", "3", "t3_p1x2")]
    assert count(db, "SELECT count(*) FROM signals WHERE source = 'rs'") == 6


def test_a_paging_cursor_handed_out_again_stops_paging(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Pages alternating between two cursors were asked for until max_pages (20 requests,
    # 19 of them repeats), and without a word.
    pages = {None: listing([post("a")], after="t3_a"),
             "t3_a": listing([post("b")], after="t3_b"),
             "t3_b": listing([post("a")], after="t3_a")}
    api.add("/r/loop/hot.json",
            lambda r: Reply.json(pages[r.arg("after")], headers=limits(len(api.requests))))
    sources = write_sources(tmp_path / "s.toml",
                            [source("lp", api, subreddit="loop", max_pages=20)])
    result = harvest("--sources", str(sources), "crawl", "lp", *FAST, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [h.arg("after") for h in api.hits("/r/loop/hot.json")] == [None, "t3_a", "t3_b"]
    assert count(db, "SELECT count(*) FROM signals") == 2
    assert count(db, "SELECT (stats->>'harvest/source/lp/paging_loop')::int "
                     "FROM crawl_runs") == 1
    assert "paging came back to 't3_a', followed already in this run" in logs(home)


def test_oauth_client_credentials_then_bearer(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    api.add("/api/v1/access_token", lambda r: Reply.json(
        {"access_token": "tok-s3cr3t-token", "token_type": "bearer", "expires_in": 86400,
         "scope": "*"}))

    def search(request: ApiRequest) -> Reply:
        if request.headers.get("authorization") != "bearer tok-s3cr3t-token":
            return Reply.json({"message": "Unauthorized", "error": 401}, status=401)
        return Reply.json(listing([post("s1", title="asyncio tips")]), headers=limits(1))

    api.add("/r/python/search", search)
    sources = write_sources(tmp_path / "s.toml", [source(
        "pysearch", api, auth_base=api.url, subreddit="python", listing="search",
        query="asyncio", time_filter="month")])
    env = {"REDDIT_CLIENT_ID": "client-id-1", "REDDIT_CLIENT_SECRET": "client-pw-2"}

    result = harvest("--sources", str(sources), "crawl", "pysearch", *FAST, home=home,
                     env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    (token,) = api.hits("/api/v1/access_token")
    assert token.method == "POST"
    assert token.headers["authorization"] == "Basic " + base64.b64encode(
        b"client-id-1:client-pw-2").decode()
    assert parse_qs(token.body.decode()) == {"grant_type": ["client_credentials"]}
    assert token.headers["user-agent"] == UA
    (listing_hit,) = api.hits("/r/python/search")
    assert (listing_hit.arg("q"), listing_hit.arg("restrict_sr"), listing_hit.arg("t")) == (
        "asyncio", "1", "month")
    assert count(db, "SELECT title FROM signals WHERE external_id = 't3_s1'") == "asyncio tips"
    output = result.stdout + result.stderr + logs(home)
    assert not any(secret in output for secret in ("client-pw-2", "tok-s3cr3t", "Basic "))


def test_refused_credentials_are_one_clear_failure(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    api.add("/api/v1/access_token",
            lambda r: Reply.json({"message": "Unauthorized", "error": 401}, status=401))
    sources = write_sources(tmp_path / "s.toml",
                            [source("py", api, auth_base=api.url, subreddit="python")])

    result = harvest("--sources", str(sources), "crawl", "py", *FAST, home=home,
                     env={"REDDIT_CLIENT_ID": "id", "REDDIT_CLIENT_SECRET": "wrong"})

    assert result.returncode == 1
    assert any(line.startswith("failed py:") and "refused the client credentials" in line
               for line in result.stdout.splitlines()), result.stdout
    assert [r.path for r in api.requests if r.path != "/robots.txt"] == ["/api/v1/access_token"]
    assert count(db, "SELECT errors FROM crawl_runs") == 1


@pytest.mark.parametrize(("env", "args", "line"), [
    ({"REDDIT_CLIENT_ID": "id-only"}, (),
     "skipped py: REDDIT_CLIENT_ID is set but REDDIT_CLIENT_SECRET is not; set both for "
     "OAuth, or neither for the public JSON API"),
    ({}, ("-s", "HARVEST_REDDIT_USERNAME=two words"),
     "skipped py: HARVEST_REDDIT_USERNAME 'two words' is not a Reddit username"),
])
def test_unusable_configuration_skips_the_source(
    api: ApiServer, home: Path, tmp_path: Path, env: dict[str, str], args: tuple[str, ...],
    line: str,
) -> None:
    sources = write_sources(tmp_path / "s.toml", [source("py", api, subreddit="python")])
    result = harvest("--sources", str(sources), "crawl", "py", *FAST, *args, home=home,
                     env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line in result.stdout
    assert api.requests == []


def test_broken_private_and_unknown_subreddits_are_failures(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    api.add("/r/broken/new.json", lambda r: Reply.text(
        '{"kind": "Listing", "data": {"children": [', content_type="application/json"))
    api.add("/r/secret/new.json", lambda r: Reply.json(
        {"reason": "private", "message": "Forbidden", "error": 403}, status=403))
    api.add("/r/nosuchsub/new.json", lambda r: Reply(
        302, b"", {"Location": f"{api.url}/subreddits/search.json?q=nosuchsub"}))
    api.add("/subreddits/search.json", lambda r: Reply.json(
        listing([{"kind": "t5", "data": {"name": "t5_1", "display_name": "nosuchsub2"}}])))
    sources = write_sources(tmp_path / "s.toml", [
        source(name, api, subreddit=name, listing="new")
        for name in ("broken", "secret", "nosuchsub")])

    result = harvest("--sources", str(sources), "crawl", "--all", *FAST, home=home)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for name, says in [("broken", "not JSON"), ("secret", "HTTP 403: the subreddit is private"),
                       ("nosuchsub", "r/nosuchsub does not exist")]:
        assert any(line.startswith(f"failed {name}:") and says in line
                   for line in lines), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    rejects = db.execute("SELECT source, reason, field FROM rejects").fetchall()
    assert rejects == [("broken", "unusable_document", "document")]
    errors = dict(db.execute("SELECT sources[1], errors FROM crawl_runs"))
    assert errors == {"broken": 1, "secret": 1, "nosuchsub": 1}
    assert count(db, "SELECT count(*) FROM signals") == 0


def test_new_listing_stops_paging_once_caught_up_with_the_last_run(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    def new(request: ApiRequest) -> Reply:
        pid = f"{request.path.split('/')[2]}{len(api.hits(request.path))}"
        return Reply.json(listing([post(pid)], after=f"t3_{pid}"), headers=limits(1))

    api.add("/r/python/new.json", new)
    api.add("/r/rust/new.json", new)
    api.add("/r/go/new.json", new)
    sources = write_sources(tmp_path / "s.toml", [
        source("fresh", api, subreddit="python", listing="new", max_pages=3),
        source("control", api, subreddit="rust", listing="new", max_pages=3),
        source("partial", api, subreddit="go", listing="new", max_pages=3)])
    # fresh's last run ran to its end with nothing failed 2 h after its posts were made:
    # page 1 already reaches posts that run stored. control has never run, and partial's
    # last run was only partly failed (it moved last_success, and a page it missed was
    # never asked for again): both page on to max_pages.
    since = CREATED + timedelta(hours=2)
    db.execute("INSERT INTO sources_state (source, last_attempt, last_success, cursor) "
               "VALUES ('fresh', %s, %s, %s), ('partial', %s, %s, '{}')",
               (since, since, Jsonb({"since": since.isoformat()}), since, since))

    result = harvest("--sources", str(sources), "crawl", "fresh", "control", "partial",
                     *FAST, home=home)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(api.hits("/r/python/new.json")) == 1
    assert len(api.hits("/r/rust/new.json")) == len(api.hits("/r/go/new.json")) == 3
    assert "page 1 reaches posts older than the last run" in logs(home)
    stored = dict(db.execute("SELECT source, count(*) FROM signals GROUP BY source"))
    assert stored == {"fresh": 1, "control": 3, "partial": 3}


def test_429_with_retry_after_is_waited_out_then_stored(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:

    def hot(request: ApiRequest) -> Reply:
        if len(api.hits("/r/python/hot.json")) == 1:
            return Reply.json({"message": "Too Many Requests", "error": 429}, status=429,
                              headers={"Retry-After": "1", "X-Ratelimit-Used": "100",
                                       "X-Ratelimit-Remaining": "0.0",
                                       "X-Ratelimit-Reset": "1"})
        return Reply.json(listing([post("r1")]), headers=limits(1))

    api.add("/r/python/hot.json", hot)
    sources = write_sources(tmp_path / "s.toml", [source("py", api, subreddit="python")])

    result = harvest("--sources", str(sources), "crawl", "py", *FAST, home=home)

    assert result.returncode == 0, result.stdout + result.stderr
    first, second = api.hits("/r/python/hot.json")
    assert second.at - first.at >= 0.9
    assert count(db, "SELECT count(*) FROM signals WHERE external_id = 't3_r1'") == 1
    assert count(db, "SELECT errors FROM crawl_runs") == 0
