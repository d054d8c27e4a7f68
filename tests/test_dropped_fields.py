"""A field a source sends in a form that cannot be used (a date no parser reads, a count
that is not a number, a date in the future) is left out of its item, and the item is
kept: each such field is counted per source, shown in the crawl summary, kept in the
run's stats and logged once with what was wrong. Before, these fields vanished without a
trace (fastfeedparser drops a date it cannot parse; the API parsers skipped a score of
``"lots"``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from parsel import Selector
from scrapy.utils.test import get_crawler

from harvester.items import Signal
from harvester.parsers import selectors
from harvester.parsers.article import Article
from harvester.parsers.feed import parse_feed
from harvester.parsers.hackernews import parse_hit, parse_item
from harvester.parsers.reddit import parse_listing
from harvester.parsers.x import parse_search
from harvester.pipelines.validate import ValidatePipeline
from harvester.services.localsite import LocalSite
from harvester.spiders.pages import listing_fields, merge
from tests.apiserver import ApiServer, Reply
from tests.conftest import harvest, write_sources
from tests.feeds import items, rss
from tests.test_reddit import FAST, listing, post

FEED_URL = "https://e.org/feed"


def by_url(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["url"]: e for e in entries}


def test_an_rss_date_no_parser_reads_is_reported_and_one_feedparser_reads_is_kept() -> None:
    doc = rss([
        {"title": "Bad date", "link": "https://e.org/1", "date": "yesterday-ish"},
        {"title": "Good date", "link": "https://e.org/2",
         "date": "Tue, 10 Jun 2003 04:00:00 GMT"},
        {"title": "No date", "link": "https://e.org/3"},
    ])
    # An entry without link or id sends the document to feedparser as well; fastfeedparser's
    # entries are kept on a tie and must still report the date.
    with_reject = doc.replace("</channel>", "<item><title>No link</title></item></channel>")
    entries = by_url(parse_feed(doc.encode(), FEED_URL).entries)
    assert entries["https://e.org/1"]["published_at"] is None
    assert entries["https://e.org/1"]["dropped"] == {
        "published_at": "'yesterday-ish' is not a date"}
    assert entries["https://e.org/2"]["published_at"] == datetime(2003, 6, 10, 4, tzinfo=UTC)
    # A feed without a date says nothing wrong: nothing to report.
    assert "dropped" not in entries["https://e.org/2"]
    assert "dropped" not in entries["https://e.org/3"]
    parsed = parse_feed(with_reject.encode(), FEED_URL)
    assert parsed.parser == "fastfeedparser" and len(parsed.rejects) == 1
    assert by_url(parsed.entries)["https://e.org/1"]["dropped"] == {
        "published_at": "'yesterday-ish' is not a date"}


def test_an_atom_date_no_parser_reads_is_reported() -> None:
    # fastfeedparser drops it; feedparser would roll month 13 and day 45 over into 2025.
    doc = ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
           '<entry><id>urn:1</id><title>One</title><link href="https://e.org/1"/>'
           '<updated>2024-13-45T99:00:00Z</updated></entry>'
           '<entry><id>urn:2</id><title>Two</title><link href="https://e.org/2"/>'
           '<updated>2024-02-03T04:05:06Z</updated></entry></feed>')
    entries = by_url(parse_feed(doc.encode(), FEED_URL).entries)
    assert entries["https://e.org/2"]["updated_at"] == datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)
    one = entries["https://e.org/1"]
    assert one["updated_at"] is None and one["published_at"] is None
    assert one["dropped"] == {"updated_at": "'2024-13-45T99:00:00Z' is not a date"}


def test_a_json_feed_date_no_parser_reads_is_reported() -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": [
        {"id": "1", "url": "https://e.org/1", "title": "a", "date_published": "soon-ish"},
        {"id": "2", "url": "https://e.org/2", "title": "b",
         "date_published": "2024-01-02T03:04:05Z"}]}
    entries = by_url(parse_feed(json.dumps(doc).encode(), FEED_URL).entries)
    assert entries["https://e.org/1"]["published_at"] is None
    assert entries["https://e.org/1"]["dropped"] == {
        "published_at": "'soon-ish' is not a date"}
    assert "dropped" not in entries["https://e.org/2"]


def test_api_counts_that_are_not_numbers_are_reported_and_whole_number_strings_kept() -> None:
    reddit = parse_listing(json.dumps(listing([post(
        "a", score="lots", num_comments="12", upvote_ratio=None)])).encode())
    assert reddit.posts[0]["engagement"] == {"num_comments": 12}
    assert reddit.posts[0]["dropped"] == {"engagement.score": "'lots' is not a number"}
    # NaN reaches Python's json as a float; it is no count either.
    odd = parse_listing(json.dumps(listing([post("b", score=float("nan"))])).encode())
    assert odd.posts[0]["dropped"] == {"engagement.score": "nan is not a number"}

    x = parse_search(json.dumps({"data": [{
        "id": "1800000000000000000", "text": "hi", "public_metrics": {
            "like_count": "7", "retweet_count": True, "reply_count": {"n": 1}}}],
        "meta": {"result_count": 1}}).encode())
    assert x.tweets[0]["engagement"] == {"like_count": 7}
    assert x.tweets[0]["dropped"] == {"engagement.retweet_count": "True is not a number",
                                      "engagement.reply_count": "{'n': 1} is not a number"}

    item = parse_item({"id": 7, "type": "story", "title": "T", "time": 1767614400,
                       "score": "high", "descendants": 3}).fields
    assert item is not None and item["engagement"] == {"comments": 3}
    assert item["dropped"] == {"engagement.score": "'high' is not a number"}
    hit = parse_hit({"objectID": "8", "title": "T", "created_at_i": 1767614400,
                     "points": 5, "num_comments": None, "_tags": ["story"]}).fields
    assert hit is not None and hit["engagement"] == {"score": 5} and "dropped" not in hit


def test_a_hacker_news_id_sent_as_text_is_the_same_item() -> None:
    fields = parse_item({"id": "7", "type": "story", "title": "T", "time": 1767614400}).fields
    assert fields is not None and fields["external_id"] == "7"
    rejected = parse_item({"id": "seven", "type": "story", "title": "T"}).reject
    assert rejected is not None and rejected.reason == "invalid_id"


def test_a_pages_listing_date_that_is_no_date_is_reported_unless_the_article_gives_one(
) -> None:
    node = selectors.select(Selector(text='<li><a href="/a">A</a><time>soon</time></li>'),
                            "li")[0]
    listing = listing_fields({"url": "a", "title": "a", "published": "time"}, node,
                             "https://e.org/", "https://e.org/")
    assert listing == {"url": "https://e.org/a", "title": "A",
                       "dropped": {"published_at": "'soon' is not a date"}}
    assert merge(listing, Article())["dropped"] == {"published_at": "'soon' is not a date"}
    dated = merge(listing, Article(published_at=datetime(2024, 5, 1, tzinfo=UTC)))
    assert "dropped" not in dated and dated["published_at"] == datetime(2024, 5, 1, tzinfo=UTC)


def test_validate_counts_the_dates_and_links_it_drops_per_source() -> None:
    crawler = get_crawler(settings_dict={})
    pipeline = ValidatePipeline(crawler)
    item = Signal(source="s", kind="feed", url="https://e.org/a", title="Kept",
                  published_at=datetime.now(UTC) + timedelta(days=30),
                  link_url="javascript:void(0)")
    asyncio.run(pipeline.process_item(item))
    assert (item.title, item.published_at, item.link_url) == ("Kept", None, None)
    stats = crawler.stats.get_stats()
    assert stats["harvest/source/s/dropped_field/published_at"] == 1
    assert stats["harvest/source/s/dropped_field/link_url"] == 1
    assert stats["harvest/source/s/dropped_fields"] == 2


@pytest.mark.parametrize("placeholder", [datetime(1, 1, 1, tzinfo=UTC),
                                         datetime(1970, 1, 1, tzinfo=UTC)])
def test_a_placeholder_date_is_dropped_not_kept_out_of_every_since_window(
        placeholder: datetime) -> None:
    # .NET's DateTime.MinValue and epoch 0: stored, they put the item before any
    # `harvest top --since` window and every weekly brief.
    crawler = get_crawler(settings_dict={})
    item = Signal(source="s", kind="feed", url="https://e.org/a", title="Kept",
                  published_at=placeholder, updated_at=datetime(2024, 5, 1, tzinfo=UTC))
    asyncio.run(ValidatePipeline(crawler).process_item(item))
    assert (item.title, item.published_at) == ("Kept", None)
    assert item.updated_at == datetime(2024, 5, 1, tzinfo=UTC)
    stats = crawler.stats.get_stats()
    assert stats["harvest/source/s/dropped_field/published_at"] == 1
    assert stats["harvest/validate/early_date"] == 1


def test_a_url_with_spaces_is_stored_as_a_browser_would_send_it() -> None:
    pipeline = ValidatePipeline(get_crawler(settings_dict={}))
    item = Signal(source="s", kind="feed", url="https://e.org/a b/c\td?q=x y",
                  title="Spaces", link_url="https://e.org/target page")
    asyncio.run(pipeline.process_item(item))
    assert item.url == "https://e.org/a%20b/cd?q=x%20y"
    assert item.link_url == "https://e.org/target%20page"


def test_a_crawl_keeps_the_items_and_reports_the_dropped_fields(
    site: LocalSite, api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    feed = items("tech", 2)
    feed[0]["date"] = "yesterday-ish"
    feed[1]["link"] = f"{feed[1]['link']}/with space"
    (site.root / "tech.xml").write_text(rss(feed))
    api.add("/r/python/hot.json", lambda r: Reply.json(listing([post("a1", score="lots")])))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "tech", "kind": "feed", "urls": [f"{site.url}/tech.xml"]},
        {"name": "py", "kind": "reddit", "api_base": api.url, "subreddit": "python"}])

    result = harvest("--sources", str(sources), "crawl", "--all", *FAST, home=home)

    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "fields dropped tech: the items were kept without fields the source sent in a " \
           "form that cannot be used (published_at ×1)" in out
    assert "fields dropped py: the items were kept without fields the source sent in a " \
           "form that cannot be used (engagement.score ×1)" in out
    rows = dict(db.execute("SELECT url, published_at FROM signals WHERE source = 'tech'"))
    assert rows.keys() == {"https://news.example.org/tech/0",
                           "https://news.example.org/tech/1/with%20space"}
    assert rows["https://news.example.org/tech/0"] is None
    engagement = db.execute("SELECT engagement FROM signals WHERE source = 'py'").fetchone()
    assert engagement == ({"num_comments": 7, "upvote_ratio": 0.93},)
    runs = dict(db.execute("SELECT spider, stats -> 'harvest/by_source' FROM crawl_runs"))
    assert runs["feed"]["tech"]["dropped"] == {"published_at": 1}
    assert runs["reddit"]["py"]["dropped"] == {"engagement.score": 1}
    log = "".join(p.read_text() for p in (home / "logs").glob("*.log"))
    assert "Source tech: https://news.example.org/tech/0 kept without its published_at: " \
           "'yesterday-ish' is not a date" in log
    stats = json.loads(harvest("stats", "--json", home=home).stdout)
    assert stats["sources"]["py"]["last_run_dropped_fields"] == {"engagement.score": 1}
    assert stats["sources"]["tech"]["last_run_dropped_fields"] == {"published_at": 1}
    text = harvest("stats", home=home).stdout
    assert "fields dropped by py's last run: engagement.score ×1" in text
