"""parse_feed on small hand-made documents: formats, charsets, gzip, links, salvage."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harvester.parsers import feed as feed_module
from harvester.parsers.encoding import BodyTooLarge, decode_document, gunzip_if_needed
from harvester.parsers.feed import ParsedFeed, parse_feed
from harvester.parsers.html import html_to_text, inline_text
from tests.feeds import items, rss

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "feeds"
ENTRY_KEYS = {
    "external_id", "url", "title", "text", "author", "published_at", "updated_at", "tags",
}


def parse(name: str, url: str | None = None, content_type: str | None = None) -> ParsedFeed:
    body = (FIXTURES / name).read_bytes()
    return parse_feed(body, url or f"https://feeds.example/{name}", content_type)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_rss2_entries() -> None:
    feed = parse("rss2.xml")
    assert feed.error is None and feed.rejects == []
    assert feed.parser == "fastfeedparser"
    assert feed.encoding == "utf-8"
    assert feed.feed_title == "Harbour Gazette"
    first, second, third = feed.entries
    assert set(first) == ENTRY_KEYS
    assert first["external_id"] == "gazette-1001"
    assert first["url"] == "https://gazette.example/2025/01/ferry-timetable"
    assert first["title"] == "Ferry timetable & fares change"
    assert first["author"] == "Ines Calloway"
    assert first["published_at"] == utc(2025, 1, 6, 8, 30)  # +0100 → UTC
    assert first["tags"] == ["Transport", "Harbour"]  # deduplicated, order kept
    assert second["title"] == "Café opens on the quay"
    assert second["text"] == "A new café serves fishermen from 5am."
    # No <link>: the permalink guid is the URL; a naive date is taken as UTC.
    assert third["url"] == "https://gazette.example/2025/01/lighthouse"
    assert third["published_at"] == utc(2025, 1, 4, 12, 0)


def test_html_summary_becomes_plain_text() -> None:
    text = parse("rss2.xml").entries[0]["text"]
    # Paragraphs on their own lines, script dropped, &nbsp; decoded.
    assert text == "The winter timetable starts on Monday.\nFares rise by 5 %."


def test_rss1_rdf() -> None:
    feed = parse("rss1_rdf.xml")
    assert feed.feed_title == "Field Journal"
    assert [e["title"] for e in feed.entries] == ["Moss on the north wall", "Lichen survey"]
    moss = feed.entries[0]
    assert moss["url"] == "https://journal.example/notes/moss"
    assert moss["published_at"] == utc(2024, 11, 2, 6, 15)
    assert moss["author"] == "R. Okafor"
    assert moss["tags"] == ["botany"]


def test_atom10_with_xml_base() -> None:
    feed = parse("atom10.xml")
    assert feed.error is None
    # fastfeedparser ignores xml:base; with relative links feedparser's answer is used.
    assert feed.parser == "feedparser"
    assert feed.feed_title == "Release notes"  # type="html" title reduced to text
    v2, v19 = feed.entries
    assert v2["external_id"] == "tag:code.example,2024:v2"
    # Relative alternate link resolved against the feed's xml:base, not the enclosure.
    assert v2["url"] == "https://code.example/project/releases/2.0"
    assert v2["published_at"] == utc(2024, 6, 1, 16, 0)
    assert v2["updated_at"] == utc(2024, 6, 2, 10, 0)
    assert v2["author"] == "Mira Holt"
    assert v2["tags"] == ["release", "stable"]
    assert v2["text"] == "Highlights\nFaster start-up\nNew & improved CLI"
    # The entry's own xml:base wins over the feed's.
    assert v19["url"] == "https://mirror.example/archive/1.9.html"
    assert v19["title"] == "Version 1.9 <beta>"  # plain text, not a tag
    assert v19["text"] == "Plain text: a < b and c > d."


def test_falls_back_to_feedparser_when_fastfeedparser_fails() -> None:
    # Atom without its namespace: fastfeedparser raises, feedparser copes.
    body = (
        b"<feed><title>Loose</title><entry><title>Loose atom</title>"
        b'<link href="https://loose.example/1"/><id>urn:x:1</id>'
        b"<updated>2024-02-03T04:05:06Z</updated></entry></feed>"
    )
    feed = parse_feed(body, "https://loose.example/feed")
    assert feed.parser == "feedparser"
    (entry,) = feed.entries
    assert entry["url"] == "https://loose.example/1"
    assert entry["updated_at"] == utc(2024, 2, 3, 4, 5, 6)
    assert entry["published_at"] is None  # not feedparser's updated→published stand-in


def test_atom03() -> None:
    feed = parse("atom03.xml")
    (entry,) = feed.entries
    assert entry["title"] == "Spring is here"
    assert entry["url"] == "https://oldblog.example/2004/03/spring"
    assert entry["published_at"] == utc(2004, 3, 9, 17, 30)
    assert entry["updated_at"] == utc(2004, 3, 10, 12, 0)
    assert entry["text"] == "Crocuses everywhere."


def test_json_feed() -> None:
    feed = parse("jsonfeed.json", content_type="application/feed+json")
    assert feed.error is None
    assert feed.feed_title == "Kiln Notes"
    glaze, maintenance = feed.entries
    assert glaze["external_id"] == "kiln-42"
    assert glaze["url"] == "https://kiln.example/posts/glaze"
    assert glaze["title"] == "Glaze tests"
    assert glaze["text"] == "Cone 6 results.\nTwo cracked."
    assert glaze["published_at"] == utc(2024, 9, 10, 5, 0)
    assert glaze["updated_at"] == utc(2024, 9, 11, 5, 0)
    assert glaze["author"] == "Ana Ruiz"
    assert glaze["tags"] == ["ceramics", "glaze"]
    # An id without a URL is still an entry.
    assert maintenance["external_id"] == "kiln-43" and maintenance["url"] is None


@pytest.mark.parametrize("bad", [None, "a string", 42, ["a", "list"]])
def test_one_malformed_json_feed_item_costs_only_itself(bad: object) -> None:
    # fastfeedparser failed the whole document on any of these: the good items were lost
    # with it, as one unusable_document rejection.
    good = [{"id": f"g{i}", "url": f"https://kiln.example/g{i}", "title": f"Good {i}"}
            for i in range(2)]
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Kiln",
           "items": [good[0], bad, good[1]]}
    feed = parse_feed(json.dumps(doc).encode(), "https://kiln.example/feed.json",
                      "application/feed+json")
    assert feed.error is None and feed.feed_title == "Kiln"
    assert [e["external_id"] for e in feed.entries] == ["g0", "g1"]
    [reject] = feed.rejects
    assert reject.reason == "malformed_entry"
    assert json.loads(reject.raw["item"]) == bad


def test_a_json_integer_too_long_for_python_costs_no_item() -> None:
    # Python refuses to convert a 5,000-digit integer: the whole document failed with
    # "invalid JSON (Exceeds the limit (4300 digits) … sys.set_int_max_str_digits()".
    body = ('{"version": "https://jsonfeed.org/version/1.1", "title": "Kiln", "items": ['
            f'{{"id": {"9" * 5000}, "url": "https://kiln.example/big", "title": "Big id"}},'
            '{"id": "g1", "url": "https://kiln.example/g1", "title": "Good"}]}')
    feed = parse_feed(body.encode(), "https://kiln.example/feed.json")
    assert feed.error is None
    assert [e["url"] for e in feed.entries] == ["https://kiln.example/big",
                                                "https://kiln.example/g1"]


def test_a_json_feed_item_rejected_shows_what_came_in() -> None:
    # Fields of the wrong type were dropped, and the item's rejection then had {} as its
    # raw input: nothing for the operator to look at.
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Kiln", "items": [
        {"id": {"x": 1}, "url": ["https://kiln.example/a"], "title": {"t": 1}}]}
    [reject] = parse_feed(json.dumps(doc).encode(), "https://kiln.example/feed.json").rejects
    assert reject.reason == "missing_link_and_id"
    assert reject.raw == {"dropped": {"external_id": 'id {"x": 1} is not text',
                                      "url": 'url ["https://kiln.example/a"] is not text',
                                      "title": 'title {"t": 1} is not text'}}


def _json_feed(*items: dict) -> list[dict]:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Kiln", "items": items}
    feed = parse_feed(json.dumps(doc).encode(), "https://kiln.example/feed.json")
    assert feed.rejects == []
    return feed.entries


def test_a_json_feed_field_of_the_wrong_type_is_dropped_and_the_item_kept() -> None:
    # Each of these failed its whole item before (malformed_entry), or vanished unreported.
    [entry] = _json_feed({
        "id": "w", "url": "https://kiln.example/w", "title": ["a", "list"],
        "content_text": "Fired at cone 6.", "date_published": 1704067200,
        "authors": [7], "tags": [1, "kiln", {"x": 1}]})
    assert (entry["url"], entry["text"], entry["tags"]) == (
        "https://kiln.example/w", "Fired at cone 6.", ["kiln"])
    assert entry["title"] is entry["published_at"] is entry["author"] is None
    assert entry["dropped"] == {
        "title": 'title ["a", "list"] is not text',
        "published_at": "1704067200 is not a date",
        "author": "authors 7 is not a name",
        "tags": '2 tag(s) that are not text left out: [1, {"x": 1}]',
    }
    [url_number] = _json_feed({"id": "n", "url": 42, "title": "No link"})
    assert (url_number["url"], url_number["external_id"]) == (None, "n")
    assert url_number["dropped"] == {"url": "url 42 is not text"}


def test_json_feed_authors_and_tags_written_loosely_are_read() -> None:
    [entry] = _json_feed({"id": "s", "url": "https://kiln.example/s", "title": "Loose",
                          "authors": "Ana Ruiz", "tags": "kiln,glaze"})
    assert (entry["author"], entry["tags"]) == ("Ana Ruiz", ["kiln,glaze"])
    assert "dropped" not in entry


def test_json_feed_items_sharing_an_id_keep_their_own_dates() -> None:
    # Dates were matched to items by id: the second item's date went to the first too.
    first, second = _json_feed(
        {"id": "13", "url": "https://kiln.example/a", "title": "a",
         "date_published": "2024-02-30T00:00:00Z"},
        {"id": 13, "url": "https://kiln.example/b", "title": "b",
         "date_published": "2024-01-05T00:00:00Z"})
    assert first["published_at"] is None
    assert first["dropped"] == {"published_at": "'2024-02-30T00:00:00Z' is not a date"}
    assert second["published_at"] == utc(2024, 1, 5, 0, 0)


def test_json_feed_titles_are_plain_text() -> None:
    [entry] = _json_feed({"id": "t", "url": "https://kiln.example/t",
                          "title": "Vec<u8> & <b>bold</b> &amp; more",
                          "authors": [{"name": "R&D <team>"}]})
    assert entry["title"] == "Vec<u8> & <b>bold</b> &amp; more"
    assert entry["author"] == "R&D <team>"


def test_numeric_json_feed_ids_and_titles_are_text() -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Kiln",
           "items": [{"id": 1234, "url": "https://kiln.example/n", "title": 2024}]}
    feed = parse_feed(json.dumps(doc).encode(), "https://kiln.example/feed.json")
    [entry] = feed.entries
    assert (entry["external_id"], entry["title"]) == ("1234", "2024")


def test_utf16_without_bom() -> None:
    feed = parse("utf16le_nobom.xml")
    assert feed.encoding == "utf-16-le"
    assert feed.feed_title == "Широкие символы"
    assert feed.entries[0]["title"] == "Über Straßen – Ölpreise"


def test_windows_1251_declared() -> None:
    feed = parse("cp1251.xml")
    assert feed.encoding == "cp1251"
    assert feed.entries[0]["title"] == "Мост откроют в пятницу"
    assert feed.entries[0]["tags"] == ["Транспорт"]


def test_windows_1251_undeclared_is_detected() -> None:
    body = (FIXTURES / "cp1251.xml").read_bytes().replace(b' encoding="windows-1251"', b"")
    feed = parse_feed(body, "https://gorod.example/rss")
    assert feed.entries[0]["title"] == "Мост откроют в пятницу"


def test_utf8_declared_but_cp1252() -> None:
    feed = parse("utf8_declared_cp1252.xml")
    assert feed.encoding == "cp1252"
    assert feed.feed_title == "Café Révolution"
    assert feed.entries[0]["title"] == "Crème brûlée – “naïve” recipe"
    assert feed.entries[0]["text"] == "Señor’s favourite."


@pytest.mark.parametrize("content_type", ["application/rss+xml; charset=utf-8",
                                          "text/xml; charset=ISO-8859-1", None])
def test_one_stray_byte_in_a_utf8_feed_spoils_only_itself(
    content_type: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    # A windows-1252 byte pasted into one entry made the whole document "not UTF-8":
    # detection chose windows-1252, and every title read "Ã‰lection Ã  GenÃ¨ve".
    entries = [{"title": f"Élection à Genève n°{i} : résultats",
                "link": f"https://news.example/{i}"} for i in range(20)]
    body = rss(entries).encode("utf-8").replace("n°5 ".encode(), b"n\x92" + b"5 ")
    feed = parse_feed(body, "https://news.example/rss", content_type)
    assert feed.encoding == "utf-8"
    titles = [e["title"] for e in feed.entries]
    assert titles[4] == "Élection à Genève n°4 : résultats"
    assert titles[5] == "Élection à Genève n\ufffd5 : résultats"
    assert all("Ã" not in t for t in titles)
    assert "1 bytes are not UTF-8 in a UTF-8 document" in caplog.text
    # A windows-1252 document that says UTF-8 is still read as windows-1252 (above).
    assert decode_document("Crème brûlée, naïve".encode("cp1252"),
                           "text/xml; charset=utf-8").encoding == "cp1252"


@pytest.mark.parametrize("broken", [
    "<item><title>x</title><!-- never closed <link>https://news.example.org/b/4</link></item>",
    "<item><title><![CDATA[x</title><link>https://news.example.org/b/4</link></item>",
    "<item><title>oops<link>https://news.example.org/b/4</link></item>",
])
def test_entries_after_a_broken_item_are_rejections_not_lost(broken: str) -> None:
    # A comment or CDATA section never closed, or an unclosed tag, made the parsers read
    # the rest of the document as that item's content: 10 items gave 4 or 5 entries, a
    # good run, and the rest were gone without a trace.
    good = [f"<item><title>Story {i}</title><link>https://news.example.org/b/{i}</link>"
            "</item>" for i in range(10)]
    body = rss([]).replace("</channel>", "".join([*good[:4], broken, *good[5:]]) + "</channel>")
    feed = parse_feed(body.encode(), "https://news.example.org/rss")
    assert len(feed.entries) + len(feed.rejects) == 10, (feed.entries, feed.rejects)
    stored = {e["url"] for e in feed.entries}
    unread = [r.raw["entry"] for r in feed.rejects if r.reason == "unreadable_entry"]
    # Every good item is stored or shown whole in a rejection.
    for i in (0, 1, 2, 3, 5, 6, 7, 8, 9):
        link = f"https://news.example.org/b/{i}"
        assert link in stored or any(f"<link>{link}</link>" in raw for raw in unread), i
    # The broken item's rejection shows what came in, not "{}".
    [broken_reject] = [r for r in feed.rejects if r.reason != "unreadable_entry"]
    assert broken_reject.raw, broken_reject


def test_a_document_of_unclosed_sections_is_read_in_one_pass() -> None:
    # Each unclosed CDATA section sent a lazy regex to the end of the document: 20,000 of
    # them (480 KB) took 31 s of the crawl's only thread. One pass now; each of those
    # items is one no parser read.
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            '<link>https://news.example.org/</link><item><title>T</title>'
            '<link>https://news.example.org/1</link></item>'
            + "<item><title>x<![CDATA[ " * 20_000 + "</channel></rss>")
    feed = parse_feed(body.encode(), "https://news.example.org/rss")
    assert [e["url"] for e in feed.entries] == ["https://news.example.org/1"]
    reasons = [r.reason for r in feed.rejects]
    assert (reasons[0], set(reasons[1:]), len(reasons)) == (
        "missing_link_and_id", {"unreadable_entry"}, 20_000)  # the first one read as "x"
    # An author tens of thousands of characters long is taken as it is, not matched
    # against the "email (Name)" forms (quadratic: 9.6 s an entry).
    long_author = rss([{"title": "A", "link": "https://news.example.org/a"}]).replace(
        "<title>A</title>", "<title>A</title><author>a@b (" + " x" * 40_000 + "</author>")
    [entry] = parse_feed(long_author.encode(), "https://news.example.org/rss").entries
    assert entry["author"].startswith("a@b (")


def test_empty_items_and_markup_in_cdata_are_not_entries_lost() -> None:
    # <item /> and an item tag inside CDATA or a comment are no entries the parsers missed.
    body = rss(items("ok", 3)).replace(
        "</channel>", "<item /><!-- <item>old</item> --><description><![CDATA[<item>x</item>"
                      "]]></description></channel>")
    feed = parse_feed(body.encode(), "https://news.example.org/rss")
    assert len(feed.entries) == 3
    assert not [r for r in feed.rejects if r.reason == "unreadable_entry"]


def test_titles_and_summaries_with_markup_inside_are_read_whole() -> None:
    # fastfeedparser kept the text before the first element: "Intro:", "The"; an Atom
    # type="xhtml" title (RFC 4287) came out empty, and an entry with only such a title
    # was rejected as having neither title nor text.
    body = rss([{"title": "Intro: <em>Python</em> 3.13 released",
                 "link": "https://news.example.org/1",
                 "description": "The <b>new</b> release brings a JIT"}])
    [entry] = parse_feed(body.encode(), "https://news.example.org/rss").entries
    assert (entry["title"], entry["text"]) == ("Intro: Python 3.13 released",
                                               "The new release brings a JIT")
    xhtml = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        '<id>urn:f</id><updated>2024-01-01T00:00:00Z</updated>'
        f'<entry><title type="xhtml">{xhtml.format("Hello <b>big</b> world")}</title>'
        '<link href="https://news.example.org/x1"/><id>urn:x1</id>'
        '<updated>2024-01-01T00:00:00Z</updated>'
        f'<summary type="xhtml">{xhtml.format("Sum <i>mary</i> here")}</summary></entry>'
        f'<entry><title type="xhtml">{xhtml.format("Only a title")}</title>'
        '<link href="https://news.example.org/x2"/><id>urn:x2</id>'
        '<updated>2024-01-01T00:00:00Z</updated></entry></feed>')
    feed = parse_feed(atom.encode(), "https://news.example.org/atom")
    assert [(e["title"], e["text"]) for e in feed.entries] == [
        ("Hello big world", "Sum mary here"), ("Only a title", None)]


def test_authors_are_names_and_a_feed_s_author_is_its_entries_author() -> None:
    # Atom (RFC 4287 4.2.1) and JSON Feed give the feed's author to entries that name
    # none: 45 entries of 11 corpus files had no author. feedparser's author carried the
    # e-mail address ("Mark Pilgrim (f8dy@example.com)"), and RSS's "email (Name)" was
    # stored as it was.
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        '<id>urn:f</id><updated>2024-01-01T00:00:00Z</updated>'
        '<author><name>Ada Feed</name><email>ada@feed.example</email></author>'
        '<entry><title>Own</title><link href="https://news.example.org/1"/><id>urn:1</id>'
        '<updated>2024-01-01T00:00:00Z</updated>'
        '<author><name>Bo Entry</name><email>bo@entry.example</email></author></entry>'
        '<entry><title>Inherits</title><link href="https://news.example.org/2"/>'
        '<id>urn:2</id><updated>2024-01-01T00:00:00Z</updated></entry></feed>')
    feed = parse_feed(atom.encode(), "https://news.example.org/atom")
    assert [e["author"] for e in feed.entries] == ["Bo Entry", "Ada Feed"]
    # The same through feedparser (xml:base sends the document to it).
    based = parse_feed(atom.replace("<feed ", '<feed xml:base="https://news.example.org/" ')
                       .replace("https://news.example.org/1", "1").encode(),
                       "https://news.example.org/atom")
    assert based.parser == "feedparser"
    assert [e["author"] for e in based.entries] == ["Bo Entry", "Ada Feed"]
    json_feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Kiln",
                 "authors": [{"name": "Kiln Team"}], "items": [
                     {"id": "1", "url": "https://kiln.example/1", "title": "No author"},
                     {"id": "2", "url": "https://kiln.example/2", "title": "Own",
                      "authors": [{"name": "Ana Ruiz"}]}]}
    entries = parse_feed(json.dumps(json_feed).encode(), "https://kiln.example/feed.json").entries
    assert [e["author"] for e in entries] == ["Kiln Team", "Ana Ruiz"]
    rss_feed = rss([{"title": "Mail", "link": "https://news.example.org/m"}]).replace(
        "</title><link>https://news.example.org/m",
        "</title><author>mattt@example.org (Mattt Thompson)</author>"
        "<link>https://news.example.org/m")
    [mail] = parse_feed(rss_feed.encode(), "https://news.example.org/rss").entries
    assert mail["author"] == "Mattt Thompson"
    # Through feedparser, whose author_detail split this one into "stries (Jonas Große
    # Sundrup".
    based_rss = rss_feed.replace("mattt@example.org (Mattt Thompson)",
                                 "jonas@insanity.industries (Jonas Große Sundrup)").replace(
        '<rss version="2.0">', '<rss version="2.0" xml:base="https://news.example.org/">'
    ).replace("<link>https://news.example.org/m", "<link>m")
    parsed = parse_feed(based_rss.encode(), "https://news.example.org/rss")
    assert parsed.parser == "feedparser"
    assert parsed.entries[0]["author"] == "Jonas Große Sundrup"
    # Atom's form in RSS (Hugo's templates): fastfeedparser read no author at all.
    hugo = rss_feed.replace("<author>mattt@example.org (Mattt Thompson)</author>",
                            "<author><name>Regina Obe</name></author>")
    [named] = parse_feed(hugo.encode(), "https://news.example.org/rss").entries
    assert named["author"] == "Regina Obe"


def test_text_where_fastfeedparser_does_not_look_is_read() -> None:
    # RSS 1.0's content:encoded (the teaser <description> was stored instead) and
    # YouTube's media:description (no text at all) are read, through feedparser's text;
    # the dates stay fastfeedparser's.
    rdf = (
        '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        '<channel rdf:about="https://blog.example/"><title>b</title>'
        '<link>https://blog.example/</link><description>d</description></channel>'
        '<item rdf:about="https://blog.example/1"><title>Post</title>'
        '<link>https://blog.example/1</link><description>A teaser...</description>'
        '<content:encoded><![CDATA[<p>The whole post, every word of it.</p>]]>'
        '</content:encoded><dc:date>2024-03-28T11:08:34Z</dc:date></item></rdf:RDF>')
    [post] = parse_feed(rdf.encode(), "https://blog.example/rss").entries
    assert post["text"] == "The whole post, every word of it."
    assert post["published_at"] == utc(2024, 3, 28, 11, 8, 34)
    youtube = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"'
        ' xmlns:media="http://search.yahoo.com/mrss/"><title>c</title><id>urn:c</id>'
        '<updated>2024-01-01T00:00:00Z</updated><entry><id>yt:video:1</id>'
        '<title>A video</title><link rel="alternate" href="https://video.example/watch?v=1"/>'
        '<published>2024-01-01T00:00:00Z</published><updated>2024-01-01T00:00:00Z</updated>'
        '<media:group><media:title>A video</media:title>'
        '<media:description>What the video is about.</media:description></media:group>'
        '</entry></feed>')
    [video] = parse_feed(youtube.encode(), "https://video.example/feed").entries
    assert video["text"] == "What the video is about."


def test_http_charset_disagreeing_with_utf8_body() -> None:
    # Servers default to ISO-8859-1; the UTF-8 bytes are the truth.
    feed = parse("rss2.xml", content_type="text/xml; charset=ISO-8859-1")
    assert feed.encoding == "utf-8"
    assert feed.entries[1]["title"] == "Café opens on the quay"


def test_gzip_body_is_decompressed() -> None:
    body = gzip.compress((FIXTURES / "rss2.xml").read_bytes())
    feed = parse_feed(body, "https://gazette.example/rss.xml", "application/xml")
    assert feed.error is None
    assert len(feed.entries) == 3


def test_gzip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"<rss>" + b" " * 2_000_000)
    with pytest.raises(BodyTooLarge):
        gunzip_if_needed(bomb, limit=1_000_000)
    assert gunzip_if_needed(b"<rss/>") == b"<rss/>"


def test_relative_links_without_xml_base() -> None:
    feed = parse("relative.xml", url="https://site.example/feeds/main.xml")
    # Channel link "/blog/" resolved against the feed URL, items against that.
    assert [e["url"] for e in feed.entries] == [
        "https://site.example/blog/posts/first.html",
        "https://site.example/about",
    ]


def test_truncated_feed_salvages_entries_and_rejects_the_rest() -> None:
    feed = parse("truncated.xml")
    assert feed.error is None
    assert [e["title"] for e in feed.entries] == ["Kept one", "Kept two"]
    # The bare & in the first link is repaired, not dropped.
    assert feed.entries[0]["url"] == "https://broken.example/kept-1?a=1&b=2"
    assert feed.entries[1]["text"] == "Text with an HTML entity."
    reasons = {r.reason: r for r in feed.rejects}
    assert set(reasons) == {"missing_link_and_id", "truncated_entry"}
    assert reasons["missing_link_and_id"].field == "link"
    assert reasons["missing_link_and_id"].raw["title"] == "No link and no guid"
    assert reasons["truncated_entry"].raw["title"] == "Cut off"
    json.dumps([asdict(r) for r in feed.rejects])  # raw data is JSON-serialisable


def test_a_document_that_stops_before_its_end_is_reported() -> None:
    whole = rss(items("x", 10))
    cut = parse_feed(whole[: len(whole) // 2].encode(), "https://e.org/feed")
    assert 0 < len(cut.entries) < 10
    [reject] = cut.rejects
    assert reject.reason == "truncated_document"
    assert reject.raw["entries_read"] == str(len(cut.entries))
    assert whole[: len(whole) // 2].endswith(reject.raw["end"])
    # Whitespace, comments or processing instructions after the end are no cut.
    for tail in ("\n\n", "<!-- cached 0.2 s -->\n", "<?cache hit?>\n<!-- a -->"):
        assert parse_feed((whole + tail).encode(), "https://e.org/feed").rejects == []


def test_a_link_that_is_no_web_address_gives_way_to_the_guid_or_the_id() -> None:
    doc = rss([
        {"title": "a", "link": "javascript:void(0)", "guid": "https://e.org/permalink"},
        {"title": "b", "link": "javascript:void(0)", "guid": "tag:e.org,2024:7"},
        {"title": "c", "link": "mailto:desk@e.org"},
    ])
    a, b, c = parse_feed(doc.encode(), "https://e.org/feed").entries
    assert (a["url"], "dropped" in a) == ("https://e.org/permalink", False)
    # Kept by its id, the link reported; with neither, validate rejects it (not_http_url).
    assert (b["url"], b["external_id"]) == (None, "tag:e.org,2024:7")
    assert b["dropped"] == {"url": "'javascript:void(0)' is not a web address"}
    assert (c["url"], c["external_id"]) == ("mailto:desk@e.org", None)


def test_a_guid_that_is_no_permalink_is_not_taken_for_a_link() -> None:
    # fastfeedparser makes the guid the link of an item without one, isPermaLink or not.
    doc = rss([{"title": "a", "guid": "https://e.org/g/5"},
               {"title": "b", "link": "https://e.org/b", "guid": "https://e.org/b"}])
    doc = doc.replace("<guid>https://e.org/g/5", '<guid isPermaLink="false">https://e.org/g/5')
    a, b = parse_feed(doc.encode(), "https://e.org/feed").entries
    assert (a["url"], a["external_id"]) == (None, "https://e.org/g/5")
    assert b["url"] == "https://e.org/b"


def test_a_field_that_fails_to_normalise_costs_only_itself() -> None:
    # A parser's entry in a shape nothing here expects (content that is a number): the
    # whole entry used to become the reject unparseable_entry.
    odd = {"id": "urn:1", "link": "https://e.org/1", "title": "Kept", "content": 5,
           "published": "2024-05-01T00:00:00Z"}
    broken_link = {"id": 7, "link": 8, "links": 9}
    feed = feed_module._build(
        feed_module._Attempt(feed_module.FEEDPARSER, entries=[odd, broken_link]),
        "https://e.org/feed", "utf-8")
    [entry] = feed.entries
    assert (entry["url"], entry["title"], entry["text"]) == ("https://e.org/1", "Kept", None)
    assert entry["published_at"] == utc(2024, 5, 1, 0, 0)
    assert entry["dropped"] == {"text": "could not be read (TypeError: 'int' object is not "
                                        "iterable)"}
    assert [r.reason for r in feed.rejects] == ["missing_link_and_id"]


def test_html_page_is_not_a_feed() -> None:
    feed = parse("not_a_feed.html", content_type="text/html; charset=utf-8")
    assert feed.entries == [] and feed.rejects == []
    assert feed.error == "not a feed: the document is HTML"


def test_an_html_page_that_advertises_its_feeds_names_them() -> None:
    # The site's address where its feed's belongs: the page says where the feed is.
    page = ('<!doctype html><html><head><title>Blog</title>'
            '<link rel="alternate" type="application/rss+xml" title="RSS" href="/feed.xml">'
            '<link rel="Alternate" type="application/atom+xml; charset=utf-8" '
            'href="https://e.org/atom.xml">'
            '<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/1">'
            '<link rel="alternate" hreflang="de" href="/de/"></head><body>Hi</body></html>')
    feed = parse_feed(page.encode(), "https://e.org/blog/", "text/html")
    assert feed.entries == []
    assert feed.error == ("not a feed: the document is an HTML page that links to the feeds "
                          "https://e.org/feed.xml, https://e.org/atom.xml; put one of them in "
                          "the sources file")
    one = page.replace('<link rel="Alternate" type="application/atom+xml; charset=utf-8" '
                       'href="https://e.org/atom.xml">', "")
    assert parse_feed(one.encode(), "https://e.org/blog/", "text/html").error == (
        "not a feed: the document is an HTML page that links to the feed "
        "https://e.org/feed.xml; put that URL in the sources file")


@pytest.mark.parametrize(
    "body",
    [b"", b"   \n", b"\x00\xff\xfe garbage \x89PNG", b"<rss><channel><item><title>x",
     b"{not json", b"\x1f\x8b\x08\x00broken", b"<?xml version='1.0'?>"],
)
def test_never_raises(body: bytes) -> None:
    feed = parse_feed(body, "https://feeds.example/x")
    assert isinstance(feed, ParsedFeed)
    assert feed.entries or feed.rejects or feed.error


def test_empty_body() -> None:
    feed = parse_feed(b"", "https://feeds.example/x")
    assert feed.error is not None and feed.error.startswith("empty document")
    assert feed.entries == [] and feed.encoding is None


def test_decode_prefers_bom_and_strips_it() -> None:
    decoded = decode_document(b"\xef\xbb\xbf<rss/>", "text/xml; charset=iso-8859-1")
    assert decoded.encoding == "utf-8" and decoded.text == "<rss/>"


def test_inline_text_and_html_to_text() -> None:
    assert inline_text("  A&amp;B <b>bold</b>\n title ") == "A&B bold title"
    assert inline_text("x < y") == "x < y"
    assert html_to_text("<div>one<br>two</div><style>p{}</style><p>three &amp; four</p>") == (
        "one\ntwo\nthree & four"
    )
    assert html_to_text("no markup at all") == "no markup at all"
    assert html_to_text("") is None
    # lxml takes control characters in but refuses to set them back (it raised here).
    assert html_to_text("<p>one\x01two</p><p>three\x7f</p>") == "onetwo\nthree"
    # Other characters lxml refuses: the text is kept, through tag stripping.
    assert html_to_text("<p>one\ufffetwo</p><p>three</p>") == "one\ufffetwo three"
