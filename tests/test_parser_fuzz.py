"""The JSON source parsers never raise, whatever types a broken or changed API sends: a
document whose fields hold the wrong kind of value (a number for a list, an object for a
string, NaN, a lone surrogate, a URL that does not parse) gives fields, rejections or a
one-sentence error. A parser that raised cost the whole page in the spider, with only a
traceback in the log (found by this test: X's entity and user lists, HN's tags and type,
Reddit's removal category)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from harvester.parsers.feed import parse_feed
from harvester.parsers.hackernews import load_json, parse_hit, parse_item, parse_search_page
from harvester.parsers.reddit import parse_listing
from harvester.parsers.x import parse_search

ODD: list[Any] = [None, True, 0, -1, 1e308, float("nan"), "", " ", "http://[::1", "x:abc",
                  "\ud800", "<p>x</p>", [], {}, [1, "a"], {"a": 1}, "x" * 3000, 2**70,
                  "2026-13-45T99:99:99Z", "javascript:alert(1)", "/rel", "\x00"]

REDDIT = {"kind": "Listing", "data": {"after": "t3_x", "children": [{"kind": "t3", "data": {
    "id": "a", "name": "t3_a", "subreddit": "p", "title": "T", "author": "al", "selftext": "s",
    "is_self": False, "url": "https://e.org/a", "permalink": "/r/p/comments/a/x/",
    "created_utc": 1767614400, "edited": False, "score": 3, "num_comments": 1,
    "upvote_ratio": 0.5, "link_flair_text": "f", "over_18": False,
    "removed_by_category": None}}]}}
X = {"data": [{"id": "1800000000000000000", "text": "hi https://t.co/x", "author_id": "u1",
               "lang": "en", "created_at": "2026-01-01T00:00:00.000Z",
               "public_metrics": {"like_count": 1}, "note_tweet": {"text": "long"},
               "entities": {"urls": [{"expanded_url": "https://e.org", "display_url": "e.org",
                                      "unwound_url": "https://e.org/u"}],
                            "hashtags": [{"tag": "t"}]}}],
     "includes": {"users": [{"id": "u1", "username": "al", "name": "Al"}]},
     "meta": {"result_count": 1, "newest_id": "1800000000000000000", "next_token": "n"}}
HN_ITEM = {"id": 7, "type": "story", "title": "T", "by": "b", "time": 1767614400,
           "url": "https://e.org/x", "text": "<p>x</p>", "score": 5, "descendants": 2}
HN_HIT = {"objectID": "7", "title": "T", "url": "https://e.org", "author": "a",
          "created_at_i": 1767614400, "points": 3, "num_comments": 1,
          "story_text": "<p>s</p>", "_tags": ["story"]}
JSON_FEED = {"version": "https://jsonfeed.org/version/1.1", "title": "f",
             "home_page_url": "https://e.org/", "items": [{
                 "id": "1", "url": "https://e.org/1", "title": "t", "content_html": "<p>x</p>",
                 "summary": "s", "date_published": "2026-01-01T00:00:00Z",
                 "authors": [{"name": "a"}], "tags": ["t"]}]}


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# name → (parser, a well-formed sample, how many items the sample's result holds)
PARSERS: dict[str, tuple[Callable[[Any], Any], dict[str, Any], Callable[[Any], int]]] = {
    "reddit": (lambda d: parse_listing(body(d)), REDDIT, lambda r: len(r.posts)),
    "x": (lambda d: parse_search(body(d)), X, lambda r: len(r.tweets)),
    "hn_item": (parse_item, HN_ITEM, lambda r: int(r.fields is not None)),
    "hn_hit": (parse_hit, HN_HIT, lambda r: int(r.fields is not None)),
    "hn_search": (lambda d: parse_search_page(body(d)), {"hits": [HN_HIT], "nbPages": 2},
                  lambda r: len(r.hits)),
    "json_feed": (lambda d: parse_feed(body(d), "https://e.org/f.json",
                                       "application/feed+json"), JSON_FEED,
                  lambda r: len(r.entries)),
}


def mutated(value: Any, rnd: random.Random) -> Any:
    """``value`` with about a third of its fields (at any depth) swapped for an odd value."""
    if isinstance(value, dict):
        return {k: rnd.choice(ODD) if rnd.random() < 0.3 else mutated(v, rnd)
                for k, v in value.items()}
    if isinstance(value, list):
        return [mutated(v, rnd) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parsers_never_raise_on_documents_of_the_wrong_types(name: str) -> None:
    parse, sample, found = PARSERS[name]
    assert found(parse(sample)) == 1  # the sample itself gives its one item
    rnd = random.Random(name)
    for _ in range(1500):
        document = mutated(sample, rnd)
        try:
            parse(document)
        except Exception as exc:  # the failure is the assertion
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc} on {document!r:.300}")


@pytest.mark.parametrize("error_of", [
    lambda body: parse_listing(body).error,
    lambda body: parse_search(body).problem,
    lambda body: load_json(body)[1],  # Hacker News: every body goes through it
    lambda body: parse_feed(b'{"items": ' + body + b"}", "https://e.org/feed.json").error])
def test_json_nested_too_deeply_is_a_broken_document_not_a_crash(
        error_of: Callable[[bytes], str | None]) -> None:
    # json.loads raises RecursionError there: the spider failed on it ("callback_error")
    # with a traceback, where any other broken JSON is one clear line.
    error = error_of(b"[" * 100_000 + b"]" * 100_000)
    assert error is not None and ("too deeply" in error or "not JSON" in error), error
