"""Canonical URLs (the dedupe key) and the scoring formula."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from harvester.services.scoring import Scorer
from harvester.services.urls import (
    _SIMPLE,
    _full_canonical,
    _only_tracking,
    canonical_url,
    id_key,
    in_page_anchor,
    url_key,
)
from harvester.sources import Topic


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://ex.org/a?utm_source=rss&utm_medium=feed", "https://ex.org/a"),
        ("https://ex.org/a?id=1&fbclid=XYZ&gclid=1", "https://ex.org/a?id=1"),
        ("https://ex.org/a#comments", "https://ex.org/a"),
        ("http://EX.org:80/a?b=2&a=1", "https://ex.org/a?a=1&b=2"),
        ("https://ex.org:443/a", "https://ex.org/a"),
        ("https://ex.org/a?q=a%20b&%75tm_source=x", "https://ex.org/a?q=a+b"),  # an escaped name
        ("https://ex.org/s?name=caf%E9&utm_medium=rss", "https://ex.org/s?name=caf%e9"),
        # A feed that escaped its links twice: "&amp;amp;" reads "&amp;" once parsed.
        ("https://ex.org/a?id=1&amp;utm_source=rss&amp;page=2", "https://ex.org/a?id=1&page=2"),
        ("https://ex.org/a?id=1&amp;amp;fbclid=X", "https://ex.org/a?id=1"),
        ("http://ex.org:443/a", "https://ex.org/a"),  # the key of its key is itself
        # A tweet whatever its author is called, or if X did not say: one key per id.
        ("https://x.com/alice/status/123", "https://x.com/i/web/status/123"),
        ("https://x.com/alice/status/123", "https://x.com/alice_renamed/status/123"),
        ("https://twitter.com/Alice/status/123?s=20&t=k", "https://x.com/i/web/status/123"),
        ("http://mobile.twitter.com/a/statuses/123/photo/1#m", "https://x.com/b/status/123"),
    ],
)
def test_same_story_same_key(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)
    assert url_key(canonical_url(a)) == url_key(canonical_url(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://ex.org/a?id=1", "https://ex.org/a?id=2"),
        ("https://ex.org/a", "https://ex.org/b"),
        ("https://ex.org:8080/a", "https://ex.org/a"),
        ("https://ex.org:80/a", "https://ex.org/a"),
        ("https://ex.org/a?amp=1", "https://ex.org/a?ampere=1"),
        # Latin-1 escapes: each byte that is not UTF-8 became U+FFFD, one key for both, and
        # the second article was dropped as a duplicate of the first.
        ("https://ex.org/s?name=caf%E9", "https://ex.org/s?name=caf%E8"),
        ("https://ex.org/s?q=%FCber", "https://ex.org/s?q=%E4ber"),
        ("https://x.com/alice/status/123", "https://x.com/alice/status/124"),
        ("https://x.com/alice", "https://x.com/bob"),  # profiles, no tweets
        ("https://ex.org/alice/status/1", "https://ex.org/bob/status/1"),  # not X
    ],
)
def test_different_stories_different_keys(a: str, b: str) -> None:
    assert url_key(canonical_url(a)) != url_key(canonical_url(b))


def test_the_fast_paths_agree_with_the_full_treatment() -> None:
    # Links of the shapes the fast paths take (plain, tracking parameters only, fragment)
    # and of the shapes they must leave alone: every one keys like w3lib's full treatment.
    rnd = random.Random(7)
    hosts = ["ex.org", "EX.org", "www.ex.org:443", "ex.org:80", "ex.org:8080"]
    paths = ["/a", "/a/b-1.html", "/", "/a/./b", "/a/../b", "/%7Ea", "/caf%C3%A9", "/a b"]
    names = ["utm_source", "UTM_Medium", "fbclid", "gclid", "mc_cid", "id", "page", "q",
             "utm%5Fsource", "utm+x", "", "ref", "amp;utm_source", "amp;id", "amp"]
    values = ["", "rss", "a b", "x%20y", "1&2", "=", "é"]
    fast = 0
    for _ in range(5_000):
        url = rnd.choice(["https", "http", "HTTP"]) + "://" + rnd.choice(hosts) + rnd.choice(paths)
        params = [rnd.choice(names) + rnd.choice(["", "=" + rnd.choice(values)])
                  for _ in range(rnd.randint(0, 3))]
        if params or rnd.random() < 0.2:
            url += "?" + "&".join(params)
        if rnd.random() < 0.3:
            url += "#" + rnd.choice(["top", "a?utm_source=x", ""])
        full = _full_canonical(url.partition("#")[0])
        assert canonical_url(url) == full, url
        assert full == _full_canonical(url), url  # dropping the fragment first changes nothing
        assert canonical_url(full) == full, url  # a key is its own key
        base, _, query = url.partition("#")[0].partition("?")
        fast += bool(query and _only_tracking(query) and _SIMPLE.match(base)
                     and "/." not in base)
    assert fast > 50, fast  # the tracking-only fast path was taken, not only the full one


@pytest.mark.parametrize(("url", "expected"), [
    ("https://ex.org/log#v2", "https://ex.org/log#v2"),
    ("http://EX.org/log?utm_source=x#/item/7", "https://ex.org/log#/item/7"),  # a hash route
    ("https://ex.org/log", None), ("https://ex.org/log#", None),
    ("https://ex.org/post#comments", None),  # another page: its fragment is no identity
    ("https://ex.org:99999/log#v2", None), (None, None),
])
def test_only_a_place_on_the_listing_page_itself_keeps_its_fragment(
        url: str | None, expected: str | None) -> None:
    assert in_page_anchor(url, "https://ex.org/log#top") == expected


def test_id_key_is_per_source() -> None:
    assert id_key("a", "42") != id_key("b", "42")
    assert id_key("a", "42") == id_key("a", "42")


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOPICS = {
    "security": Topic(keywords=["ransomware", "zero-day", "CVE"], weight=2.0),
    "ai": Topic(keywords=["AI", "machine learning"], weight=1.0),
}


def score(title: str, text: str = "", age: float | None = 0.0, weight: float = 1.0,
          half_life: float = 24.0) -> tuple[float, dict]:  # type: ignore[type-arg]
    published = None if age is None else NOW - timedelta(hours=age)
    return Scorer(TOPICS, half_life).score(title=title, text=text, published_at=published,
                                          source_weight=weight, now=NOW)


def test_irrelevant_item_scores_zero() -> None:
    value, breakdown = score("Local bakery wins prize", "Bread was said to be good.")
    assert value == 0.0
    assert breakdown["topics"] == {}


def test_breakdown_explains_the_score() -> None:
    value, breakdown = score("Ransomware gang exploits zero-day", "A CVE was assigned.")
    assert breakdown["topics"]["security"]["keywords"] == ["cve", "ransomware", "zero-day"]
    # 2 title matches × 2 points + 1 text match, × topic weight 2
    assert breakdown["topics"]["security"]["points"] == 10.0
    assert breakdown["score"] == value > 50


def test_title_counts_more_than_text_and_more_topics_more_score() -> None:
    in_title, _ = score("Ransomware hits hospital")
    in_text, _ = score("Hospital news", "ransomware")
    both, _ = score("Ransomware and AI", "machine learning")
    assert in_title > in_text > 0
    assert both > in_title


def test_acronyms_match_whole_words_only() -> None:
    assert score("AI model released")[0] > 0
    assert score("They said it was fair")[0] == 0  # neither "said" nor "fair" is "AI"


def test_recency_halves_the_fresh_part() -> None:
    fresh, _ = score("Ransomware", age=0)
    day_old, info = score("Ransomware", age=24)
    ancient, _ = score("Ransomware", age=24 * 365)
    assert info["freshness"] == pytest.approx(0.2 + 0.8 * 0.5)
    assert fresh > day_old > ancient > 0
    assert ancient == pytest.approx(fresh * 0.2, rel=0.01)


def test_source_weight_scales_and_score_is_capped() -> None:
    base, _ = score("Ransomware zero-day CVE AI", age=0)
    heavy, _ = score("Ransomware zero-day CVE AI", age=0, weight=5.0)
    assert heavy == 100.0 > base
