"""Dates feeds (and pages) send outside RFC 822 / RFC 3339.

An entry's date drives its recency score and `harvest top --since`, so a wrong one is
worse than none. fastfeedparser hands what its strict paths cannot read to lenient
parsers, which read a relative phrase ("yesterday") as a time near the crawl and, when an
item has no date at all, take a guid such as ``7`` for the 7th of the current month. Those
readings are not kept: a relative phrase is reported as a dropped field, a guid is no
date. An RFC 822 date in Portuguese, Spanish, French, German, Italian or Dutch is read
(the shared corpus has a Brazilian portal's feed dated ``Seg, 24 Set 2018``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from harvester.parsers.article import parse_date
from harvester.parsers.dates import is_relative, localized_rfc822
from harvester.parsers.feed import parse_feed
from tests.feeds import rss
from tests.realdata import REALDATA

FEED_URL = "https://e.org/feed"


def one_entry(**item: str) -> dict:
    doc = rss([{"title": "t", "link": "https://e.org/1", **item}])
    (entry,) = parse_feed(doc.encode(), FEED_URL).entries
    return entry


@pytest.mark.parametrize("text", ["yesterday", "2 hours ago", "last tuesday", "now", "Today"])
def test_a_relative_date_is_reported_as_dropped_not_read_as_the_crawl_time(text: str) -> None:
    entry = one_entry(date=text)
    assert entry["published_at"] is None
    assert entry["dropped"] == {"published_at": f"{text!r} is not a date"}


@pytest.mark.parametrize("guid", ["1", "7", "Tue", "March", "10:30"])
def test_an_undated_item_does_not_take_its_guid_for_a_date(guid: str) -> None:
    entry = one_entry(guid=guid)
    assert entry["published_at"] is None and entry["updated_at"] is None
    assert "dropped" not in entry  # the feed gave no date: nothing was lost
    assert entry["external_id"] == guid


def test_dated_items_keep_their_dates_next_to_one_with_a_relative_date() -> None:
    doc = rss([
        {"title": "a", "link": "https://e.org/a", "date": "Tue, 10 Jun 2003 04:00:00 GMT"},
        {"title": "b", "link": "https://e.org/b", "date": "2 hours ago"},
        {"title": "c", "link": "https://e.org/c", "guid": "7",
         "date": "Wed, 11 Jun 2003 05:00:00 +0200"},
        {"title": "d", "link": "https://e.org/d", "guid": "8"},
        # "+0000" is no year written 0001 (that check dropped it for a moment).
        {"title": "e", "link": "https://e.org/e", "date": "Thu, 12 Jun 2003 06:00:00 +0000"},
    ])
    entries = {e["url"]: e for e in parse_feed(doc.encode(), FEED_URL).entries}
    assert entries["https://e.org/a"]["published_at"] == datetime(2003, 6, 10, 4, tzinfo=UTC)
    assert entries["https://e.org/b"]["published_at"] is None
    assert entries["https://e.org/c"]["published_at"] == datetime(2003, 6, 11, 3, tzinfo=UTC)
    assert entries["https://e.org/e"]["published_at"] == datetime(2003, 6, 12, 6, tzinfo=UTC)
    assert entries["https://e.org/d"]["published_at"] is None


def test_an_atom_entry_updated_yesterday_has_no_date() -> None:
    doc = ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
           '<entry><id>urn:1</id><title>One</title><link href="https://e.org/1"/>'
           '<updated>yesterday</updated></entry></feed>')
    (entry,) = parse_feed(doc.encode(), FEED_URL).entries
    assert entry["published_at"] is None and entry["updated_at"] is None
    assert entry["dropped"] == {"updated_at": "'yesterday' is not a date"}


def test_a_json_feed_relative_date_is_reported() -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": [
        {"id": "1", "url": "https://e.org/1", "title": "a", "date_published": "now",
         "date_modified": "2024-01-02T03:04:05Z"}]}
    (entry,) = parse_feed(json.dumps(doc).encode(), FEED_URL).entries
    assert entry["published_at"] is None
    assert entry["updated_at"] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert entry["dropped"] == {"published_at": "'now' is not a date"}


@pytest.mark.parametrize(("text", "expected"), [
    ("Seg, 24 Set 2018 19:42:40 -0300", datetime(2018, 9, 24, 22, 42, 40, tzinfo=UTC)),
    ("mar., 24 nov. 2026 10:00:00 +0100", datetime(2026, 11, 24, 9, tzinfo=UTC)),
    ("Mi, 25 März 2026 10:00 +0100", datetime(2026, 3, 25, 9, tzinfo=UTC)),
    ("jeu., 12 juin 2024 08:30:00 GMT", datetime(2024, 6, 12, 8, 30, tzinfo=UTC)),
    ("ven, 12 juillet 2024 08:30:00 GMT", datetime(2024, 7, 12, 8, 30, tzinfo=UTC)),
    ("lun, 5 agosto 2024 08:30:00 +0200", datetime(2024, 8, 5, 6, 30, tzinfo=UTC)),
    ("5 maart 2021 09:00:00 +0100", datetime(2021, 3, 5, 8, tzinfo=UTC)),
    ("Sáb, 1 dic 2029 23:59:59 -0500", datetime(2029, 12, 2, 4, 59, 59, tzinfo=UTC)),
    ("12 juillet 2024 10:00:00 CEST", datetime(2024, 7, 12, 8, tzinfo=UTC)),
    # Dotted dates are day first wherever they are written (dateutil: January 5th).
    ("01.05.2024 10:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("1.5.2024", datetime(2024, 5, 1, tzinfo=UTC)),
])
def test_an_rfc822_date_in_another_language_is_read(text: str, expected: datetime) -> None:
    entry = one_entry(date=text)
    assert entry["published_at"] == expected
    assert "dropped" not in entry


@pytest.mark.parametrize("text", [
    "31 nov 2024 10:00:00 +0000",   # no such day
    "12 juillet 2024 10:00:00 IST",  # India, Ireland or Israel: not guessed
    "12 foo 2024 10:00:00 +0000",    # no month
    "quinta-feira 12 2024",
])
def test_a_localized_text_that_is_no_date_is_not_guessed(text: str) -> None:
    assert localized_rfc822(text) is None


def test_relative_phrases_and_dates_are_told_apart() -> None:
    assert all(map(is_relative, ["now", "3 days ago", "next week", "TBD"]))
    assert not any(map(is_relative, [
        "Tue, 10 Jun 2003 04:00:00 GMT", "2024-01-02T03:04:05Z", "Seg, 24 Set 2018"]))


def test_the_shared_corpus_portuguese_feed_is_dated() -> None:
    path = REALDATA / "feeds" / "rss-parser" / "input" / "uolNoticias.rss"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    entries = parse_feed(path.read_bytes(), "https://rss.uol.com.br/feed/noticias.xml").entries
    assert len(entries) == 15
    assert all("dropped" not in e for e in entries)
    local = timezone(timedelta(hours=-3))
    assert {e["published_at"].astimezone(local).date() for e in entries} == {
        datetime(2018, 9, 24).date()}


def test_a_page_date_is_not_completed_from_today_and_may_be_localized() -> None:
    # Listing cells and article metadata go through dateutil, which completes "Tue" to
    # next Tuesday and "March" to this year's March.
    assert parse_date("Tue") is None and parse_date("March") is None
    assert parse_date("Seg, 24 Set 2018 19:42:40 -0300") == datetime(2018, 9, 24, 22, 42, 40,
                                                                      tzinfo=UTC)
    assert parse_date("May 5, 2024") == datetime(2024, 5, 5, tzinfo=UTC)
    assert parse_date("01.05.2024") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_date("10 Jun 2024 04:00 CEST") == datetime(2024, 6, 10, 2, tzinfo=UTC)
    assert parse_date("10 Jun 2024 04:00 IST") is None  # India, Ireland or Israel


def _month_day(day: datetime) -> tuple[str, datetime]:
    """``Dec 28`` for ``day`` (moved off a Feb 29, which only leap years have)."""
    if (day.month, day.day) == (2, 29):
        day += timedelta(days=1)
    return day.strftime("%b %d"), datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_a_page_date_without_year_or_day_is_not_completed_from_today() -> None:
    # dateutil fills what a text leaves out from the current date: a listing's "Dec 28"
    # read in November became next month, "March 2024" the 29th when read on a 29th.
    now = datetime.now(UTC)
    text, past = _month_day(now - timedelta(days=40))
    assert parse_date(text) == past  # this year's, or last year's in early January
    text, ahead = _month_day(now + timedelta(days=40))
    assert parse_date(text) == ahead.replace(year=ahead.year - 1)  # not weeks ahead
    assert parse_date(f"{text} 10:30") == ahead.replace(year=ahead.year - 1, hour=10,
                                                           minute=30)
    assert parse_date("March 2024") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_date("2024-03") == datetime(2024, 3, 1, tzinfo=UTC)
    # Neither a time, a lone year nor a lone day says which day it was.
    assert parse_date("10:30") is None
    assert parse_date("2024") is None
    assert parse_date("5") is None


def test_a_feed_date_without_year_or_day_is_not_completed_from_today() -> None:
    # Not RFC 822: fastfeedparser hands these to dateutil, which filled the gaps from today.
    text, ahead = _month_day(datetime.now(UTC) + timedelta(days=40))
    assert one_entry(date=text)["published_at"] == ahead.replace(year=ahead.year - 1)
    assert one_entry(date="March 2024")["published_at"] == datetime(2024, 3, 1, tzinfo=UTC)
    entry = one_entry(date="10:30")
    assert entry["published_at"] is None
    assert entry["dropped"] == {"published_at": "'10:30' is not a date"}
    # A whole date only dateutil reads keeps its reading.
    assert one_entry(date="May 5, 2024 10:00")["published_at"] == datetime(2024, 5, 5, 10,
                                                                            tzinfo=UTC)


def test_feedparser_s_reading_of_a_time_alone_is_not_kept() -> None:
    # xml:base sends the document to feedparser, which reads "10:30" as today at 10:30.
    doc = ('<rss version="2.0" xml:base="https://e.org/"><channel><title>x</title>'
           "<item><title>a</title><link>a/1</link><pubDate>10:30</pubDate></item>"
           "<item><title>b</title><link>a/2</link><pubDate>Mar 5 2024</pubDate></item>"
           "<item><title>c</title><link>a/3</link><pubDate>2024</pubDate></item>"
           "</channel></rss>")
    entries = {e["url"]: e for e in parse_feed(doc.encode(), FEED_URL).entries}
    assert entries["https://e.org/a/1"]["published_at"] is None
    assert entries["https://e.org/a/1"]["dropped"] == {"published_at": "'10:30' is not a date"}
    assert entries["https://e.org/a/2"]["published_at"] == datetime(2024, 3, 5, tzinfo=UTC)
    # A year alone is no date here either (feedparser: January 1st, fastfeedparser: none).
    assert entries["https://e.org/a/3"]["dropped"] == {"published_at": "'2024' is not a date"}


@pytest.mark.parametrize("text", ["Mon, 01 Jan 0001 00:00:00 GMT",
                                  "Mon, 01 Jan 0001 00:00:00 +0200", "01 Jan 0001 00:00 GMT",
                                  "01.01.0001", "Seg, 01 Jan 0001 00:00:00 -0300"])
def test_a_year_written_0001_is_not_read_as_2001(text: str) -> None:
    # .NET's DateTime.MinValue: RFC 822 readers and dateutil take a year below 100 for 20xx.
    assert parse_date(text) is None
    assert parse_date(text.replace("0001", "2019")) is not None
    # A zone offset "+0000" is no year written 0001 (the check dropped such dates at first).
    assert parse_date("2019-11-20T07:29:39+0000") == datetime(2019, 11, 20, 7, 29, 39,
                                                               tzinfo=UTC)
    assert parse_date("Nov 20 2019 07:29 -0000") == datetime(2019, 11, 20, 7, 29, tzinfo=UTC)
    entry = one_entry(date=text)
    # Year 1, which validate drops as a placeholder, or no date at all: never 2001.
    assert entry["published_at"] is None or entry["published_at"].year == 1


@pytest.mark.parametrize(("text", "expected"), [
    # Layouts fastfeedparser hands to email.utils, which took each zone for UTC (or "+02"
    # for two minutes) without a word.
    ("10 Jun 2003 04:00 CEST", datetime(2003, 6, 10, 2, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00:00 +02:00", datetime(2026, 11, 29, 8, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00:00 -05:00", datetime(2026, 11, 29, 15, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00:00 GMT+2", datetime(2026, 11, 29, 8, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00:00 UTC+02:00", datetime(2026, 11, 29, 8, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00 +02", datetime(2026, 11, 29, 8, tzinfo=UTC)),
    # What it reads right stays as it is.
    ("Sun, 29 Nov 2026 10:00:00 +0200", datetime(2026, 11, 29, 8, tzinfo=UTC)),
    ("Sun, 29 Nov 2026 10:00:00 CEST", datetime(2026, 11, 29, 8, tzinfo=UTC)),
])
def test_every_item_of_a_feed_with_an_unusual_offset_layout_is_read_at_its_offset(
        text: str, expected: datetime) -> None:
    doc = rss([{"title": f"t{i}", "link": f"https://e.org/{i}", "date": text}
               for i in range(3)])
    entries = parse_feed(doc.encode(), FEED_URL).entries
    assert [e["published_at"] for e in entries] == [expected] * 3
    assert all("dropped" not in e for e in entries)


def test_feedparser_s_reading_of_a_zone_it_does_not_know_is_not_kept() -> None:
    # xml:base sends the document to feedparser, which takes CET and UTC+02:00 for UTC.
    doc = ('<rss version="2.0" xml:base="https://e.org/"><channel><title>x</title>'
           "<item><title>a</title><link>a/1</link>"
           "<pubDate>Sun, 29 Nov 2026 10:00:00 CET</pubDate></item>"
           "<item><title>b</title><link>a/2</link>"
           "<pubDate>Sun, 29 Nov 2026 10:00:00 UTC+02:00</pubDate></item>"
           "</channel></rss>")
    entries = {e["url"]: e for e in parse_feed(doc.encode(), FEED_URL).entries}
    assert entries["https://e.org/a/1"]["published_at"] == datetime(2026, 11, 29, 9, tzinfo=UTC)
    assert entries["https://e.org/a/2"]["published_at"] == datetime(2026, 11, 29, 8, tzinfo=UTC)


@pytest.mark.parametrize("text", ["28 Nov 2026 10:00 IST", "Sat, 28 Nov 2026 10:00:00 IST",
                                  "Sat, 28 Nov 2026 10:00:00 XYZ"])
@pytest.mark.parametrize("base", ["", ' xml:base="https://e.org/"'])
def test_a_zone_no_reader_knows_is_no_date_and_said(text: str, base: str) -> None:
    # IST is India's, Ireland's or Israel's: email.utils took the short layout for UTC and
    # fastfeedparser the full one for India's, hours apart and without a word. Pages
    # already left it out; feeds now do too, and say so. (xml:base: feedparser reads it.)
    doc = (f'<rss version="2.0"{base}><channel><title>x</title>'
           + "".join(f"<item><title>t{i}</title><link>https://e.org/{i}</link>"
                     f"<pubDate>{text}</pubDate></item>" for i in range(2))
           + "</channel></rss>")
    entries = parse_feed(doc.encode(), FEED_URL).entries
    assert [e["published_at"] for e in entries] == [None, None]
    assert all(text in e["dropped"]["published_at"] for e in entries)
    # A clock's PM is no zone: read by the time it says, not dropped.
    assert parse_date("28 Nov 2026 10:00 PM") == datetime(2026, 11, 28, 22, tzinfo=UTC)
