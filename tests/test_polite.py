"""Politeness against a real crawl: Retry-After waited out, budgets kept, rate-limit windows
respected, a server asking for too long is left alone — all through ``harvest crawl``."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.services.ratelimit import exhausted, reset_seconds, retry_after_seconds, wait_for
from tests import conftest
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import ROOT, harvest, harvest_env, write_sources
from tests.feeds import items, rss

FAST = ("-s", "AUTOTHROTTLE_ENABLED=False")


def _feed(name: str) -> Reply:
    return Reply.text(rss(items(name, 3)), content_type="application/rss+xml")


def _first_then_feed(name: str, status: int, headers: dict[str, str], times: int = 1):
    calls = {"n": 0}

    def handler(request: ApiRequest) -> Reply:
        calls["n"] += 1
        if calls["n"] <= times:
            return Reply.text("slow down", status=status, headers=headers)
        return _feed(name)
    return handler


def _crawl(api: ApiServer, tmp_path: Path, home: Path, paths: list[str],
           **extra: Any) -> Any:
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "polite", "kind": "feed", "urls": [api.url + p for p in paths], **extra}])
    return harvest("--sources", str(sources), "crawl", "polite", *FAST, home=home)


def _stored(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM signals WHERE source = 'polite'").fetchone()
    assert row is not None
    return int(row[0])


def test_retry_after_seconds_is_waited_out_not_hammered(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    with ApiServer() as api:
        api.add("/feed.xml", _first_then_feed("a", 429, {"Retry-After": "2"}))
        result = _crawl(api, tmp_path, home, ["/feed.xml"])
        hits = api.hits("/feed.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(hits) == 2, "one refusal, one retry: no hammering"
    assert hits[1].at - hits[0].at >= 1.9
    assert _stored(db) == 3


@pytest.mark.parametrize("headers", [
    {"Retry-After": "0"},
    {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "0"},  # a reset already past
], ids=["retry-after-0", "reset-in-the-past"])
def test_a_429_that_says_wait_nothing_backs_off_instead(
    headers: dict[str, str], db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Taken at its word, it was asked again at once: six requests within 0.3 s, every retry
    # spent before the server could recover.
    with ApiServer() as api:
        api.add("/feed.xml", _first_then_feed("z", 429, headers, times=2))
        result = _crawl(api, tmp_path, home, ["/feed.xml"])
        hits = api.hits("/feed.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(hits) == 3
    assert hits[1].at - hits[0].at >= 0.9 and hits[2].at - hits[1].at >= 1.9  # 1 s, 2 s
    assert _stored(db) == 3


def test_retry_after_http_date_on_503(db: psycopg.Connection[Any], home: Path,
                                      tmp_path: Path) -> None:
    def handler(request: ApiRequest) -> Reply:
        if len(api.hits("/feed.xml")) == 1:
            # Whole seconds only: 3 s ahead keeps the wait at >= 2 s after rounding down.
            return Reply.text("maintenance", status=503,
                              headers={"Retry-After": formatdate(time.time() + 3, usegmt=True)})
        return _feed("b")

    with ApiServer() as api:
        api.add("/feed.xml", handler)
        result = _crawl(api, tmp_path, home, ["/feed.xml"])
        hits = api.hits("/feed.xml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(hits) == 2 and hits[1].at - hits[0].at >= 1.9
    assert _stored(db) == 3


def test_a_pause_holds_back_every_request_of_the_source(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    with ApiServer() as api:
        api.add("/a.xml", _first_then_feed("a", 429, {"Retry-After": "2"}))
        api.add("/b.xml", lambda r: _feed("b"))
        api.add("/c.xml", lambda r: _feed("c"))
        # /b and /c are requested after /a's 429 (budget spacing 0.5 s): both must wait.
        result = _crawl(api, tmp_path, home, ["/a.xml", "/b.xml", "/c.xml"],
                        requests_per_minute=120)
        first_429 = api.hits("/a.xml")[0].at
        later = [r.at for r in api.requests if r.path in ("/b.xml", "/c.xml")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(at - first_429 >= 1.9 for at in later)
    assert _stored(db) == 9


@pytest.mark.parametrize("retry_after", ["2", "99999"], ids=["waited", "too-long"])
def test_requests_queued_behind_autothrottle_are_held_by_a_pause(
    retry_after: str, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # With AutoThrottle on (the default) and no budget, /b and /c passed the gate at once
    # and waited in the host's queue, then went out during the pause (or, asked to wait
    # too long, were sent anyway).
    with ApiServer() as api:
        api.add("/a.xml", _first_then_feed("a", 429, {"Retry-After": retry_after}))
        api.add("/b.xml", lambda r: _feed("b"))
        api.add("/c.xml", lambda r: _feed("c"))
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "polite", "kind": "feed",
            "urls": [api.url + p for p in ("/a.xml", "/b.xml", "/c.xml")]}])
        result = harvest("--sources", str(sources), "crawl", "polite", home=home)
        first_429 = api.hits("/a.xml")[0].at
        later = [r.at for r in api.requests if r.path in ("/b.xml", "/c.xml")]
    if retry_after == "2":
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(later) == 2 and all(at - first_429 >= 1.9 for at in later)
        assert _stored(db) == 9
    else:
        assert later == [], "the server asked to be left alone; nothing more was to be sent"
        assert "more than HARVEST_RETRY_AFTER_MAX" in result.stdout


def test_a_crawl_stopped_during_a_pause_sends_nothing_more(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # SIGTERM during a 120 s Retry-After: the crawl kept sleeping, exited 124 s later and
    # sent the retry after the stop was asked for (Scrapyd's cancel, systemd's timeout
    # would have killed it first).
    with ApiServer() as api:
        api.add("/a.xml", _first_then_feed("a", 429, {"Retry-After": "120"}))
        sources = write_sources(tmp_path / "s.toml", [
            {"name": "polite", "kind": "feed", "urls": [api.url + "/a.xml"]}])
        crawl = subprocess.Popen(
            [sys.executable, "-m", "harvester.cli", "--sources", str(sources), "crawl",
             "polite", *FAST], cwd=ROOT, env=harvest_env(home), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            conftest.wait_for(lambda: api.hits("/a.xml"), "the 429")
            time.sleep(1)  # the pause has begun
            crawl.send_signal(signal.SIGTERM)
            out, err = crawl.communicate(timeout=60)  # a bound, not a timing: 120 s before
        finally:
            crawl.kill()
        hits = api.hits("/a.xml")
    assert len(hits) == 1, "nothing is sent once the crawl is stopping"
    assert crawl.returncode == 1, out + err
    assert "stopped early polite: finish reason shutdown" in out, out


@pytest.mark.parametrize(("robots", "said"), [
    (Reply.text("User-agent: *\nDisallow: /\n"), "forbidden by robots.txt"),
    # A robots.txt the server cannot serve allowed everything (its error page has no
    # rules): RFC 9309 says complete disallow.
    (Reply.text("<h1>Service Unavailable</h1>", status=503),
     "forbidden by robots.txt (it answered HTTP 503, and a robots.txt the server cannot "
     "serve means stay away this run (RFC 9309))"),
], ids=["disallow", "server-error"])
def test_robots_txt_keeps_the_crawl_away(
    robots: Reply, said: str, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    with ApiServer() as api:
        api.add("/robots.txt", lambda r: robots)
        api.add("/feed.xml", lambda r: _feed("r"))
        result = _crawl(api, tmp_path, home, ["/feed.xml"])
        fetched = api.hits("/feed.xml")
    assert fetched == []
    assert result.returncode == 1, result.stdout
    assert said in " ".join(result.stdout.split()), result.stdout
    assert _stored(db) == 0


def test_requests_per_minute_spaces_requests(db: psycopg.Connection[Any], home: Path,
                                             tmp_path: Path) -> None:
    paths = [f"/f{i}.xml" for i in range(4)]
    with ApiServer() as api:
        for i, path in enumerate(paths):
            api.add(path, lambda r, i=i: _feed(f"f{i}"))
        result = _crawl(api, tmp_path, home, paths, requests_per_minute=60)
        times = sorted(r.at for r in api.requests if r.path in paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, gaps  # 60 per minute = one per second
    assert _stored(db) == 12


def test_robots_crawl_delay_spaces_requests_to_its_host(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Scrapy reads robots.txt's rules but not its Crawl-delay: four feeds went out within
    # a few milliseconds of each other to a site asking for one request a second. Two
    # sources on the host (one crawler each under `harvest crawl`) share its pace.
    paths = [f"/f{i}.xml" for i in range(4)]
    with ApiServer() as api:
        api.add("/robots.txt", lambda r: Reply.text(
            "User-agent: *\nCrawl-delay: 1\nDisallow: /private/\n"))
        for i, path in enumerate(paths):
            api.add(path, lambda r, i=i: _feed(f"f{i}"))
        sources = write_sources(tmp_path / "s.toml", [
            {"name": "polite", "kind": "feed", "urls": [api.url + p for p in paths[:2]]},
            {"name": "also", "kind": "feed", "urls": [api.url + p for p in paths[2:]]}])
        result = harvest("--sources", str(sources), "crawl", "--all", *FAST, home=home)
        times = sorted(r.at for r in api.requests if r.path in paths)
    assert result.returncode == 0, result.stdout + result.stderr
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 4 and min(gaps) >= 0.9, gaps
    assert _stored(db) == 6


def test_rate_limit_window_used_up_pauses_until_reset(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    def first(request: ApiRequest) -> Reply:
        reply = _feed("x")
        reply.headers.update({"x-rate-limit-remaining": "0",
                              "x-rate-limit-reset": str(int(time.time()) + 3)})
        return reply

    with ApiServer() as api:
        api.add("/one.xml", first)
        api.add("/two.xml", lambda r: _feed("y"))
        result = _crawl(api, tmp_path, home, ["/one.xml", "/two.xml"],
                        requests_per_minute=600)
        one, two = api.hits("/one.xml")[0].at, api.hits("/two.xml")[0].at
    assert result.returncode == 0, result.stdout + result.stderr
    assert two - one >= 1.9
    assert _stored(db) == 6


def test_too_long_retry_after_fails_the_source_without_retrying(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    with ApiServer() as api:
        api.add("/feed.xml", _first_then_feed("a", 429, {"Retry-After": "3600"}, times=99))
        result = _crawl(api, tmp_path, home, ["/feed.xml"])
        hits = api.hits("/feed.xml")
    assert result.returncode == 1
    assert len(hits) == 1
    assert "rate limited" in result.stdout and "HARVEST_RETRY_AFTER_MAX" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), (" 120 ", 120.0), ("", None), ("soon", None), ("-5", None), (None, None),
     ("0", None),  # "now": no wait to honour, the caller backs off instead
     ("1.5", 1.5),  # a fraction, as some APIs send: the alert channels' reading too
     ("1e3", None), ("nan", None),
     ("\u00b2", None)],  # a latin-1 "²": str.isdigit said yes, float() raised
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now) == pytest.approx(30)
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) is None  # past
    # RFC 9110's other two layouts, which recipients must take: RFC 850 and asctime (no
    # zone, GMT by definition; it was taken for no hint at all).
    assert retry_after_seconds("Tuesday, 14-Nov-23 22:13:50 GMT", now) == pytest.approx(30)
    assert retry_after_seconds("Tue Nov 14 22:13:50 2023", now) == pytest.approx(30)


def test_api_reset_headers() -> None:
    now = 1_700_000_000.0
    x_api = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(now) + 40)}
    reddit = {"x-ratelimit-remaining": "0.0", "x-ratelimit-reset": "25"}
    assert exhausted(x_api.get) and exhausted(reddit.get)
    assert not exhausted({"x-ratelimit-remaining": "12"}.get)
    assert reset_seconds(x_api.get, now) == pytest.approx(40)
    assert reset_seconds(reddit.get, now) == 25.0
    assert wait_for(429, x_api.get, now) == pytest.approx(40)
    assert wait_for(429, {"retry-after": "7", **reddit}.get, now) == 7.0
    assert wait_for(200, {"retry-after": "7"}.get, now) is None
    past = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(now) - 5)}
    assert reset_seconds(past.get, now) is None and wait_for(429, past.get, now) is None
    # Not a time anyone meant: "asked to wait inf s" was the message.
    for odd in ("1e400", "nan", "inf"):
        assert reset_seconds({"x-rate-limit-reset": odd}.get, now) is None
        assert reset_seconds({"x-ratelimit-reset": odd}.get, now) is None
