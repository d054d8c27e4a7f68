"""Sitemap kind: the parser on hand-written documents, and real crawls (``harvest crawl``)
of a local site — robots.txt → sitemap index → sitemaps (one gzip) → pages — into
PostgreSQL."""

from __future__ import annotations

import gzip
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rich.console import Console

from harvester.parsers.sitemap import newer_than, parse_lastmod, parse_sitemap, robots_sitemaps
from harvester.services.localsite import LocalSite
from harvester.spiders.sitemap import MAX_SEEN, SitemapSpider, _Run, slug_title
from harvester.ui import rejects_table
from tests.apiserver import ApiServer, Reply
from tests.conftest import harvest, write_sources

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
NEWS_NS = 'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"'
OLD = "2024-03-01T10:00:00+00:00"


def urlset(entries: list[tuple[str, str | None]]) -> str:
    """A urlset of (loc, lastmod or None)."""
    rows = "".join(
        f"<url><loc>{loc}</loc>" + (f"<lastmod>{mod}</lastmod>" if mod else "") + "</url>"
        for loc, mod in entries
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset {NS}>{rows}</urlset>'


def index(entries: list[tuple[str, str | None]]) -> str:
    rows = "".join(
        f"<sitemap><loc>{loc}</loc>" + (f"<lastmod>{mod}</lastmod>" if mod else "") + "</sitemap>"
        for loc, mod in entries
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex {NS}>{rows}</sitemapindex>'


def article(title: str, author: str, published: str) -> str:
    return (
        "<!doctype html><html lang='en'><head>"
        f"<title>{title} | Example News</title><meta property='og:title' content='{title}'>"
        f"<meta name='author' content='{author}'>"
        f"<meta property='article:published_time' content='{published}'></head><body>"
        f"<article><h1>{title}</h1>"
        + "".join(f"<p>Paragraph {i} of the story about {title.lower()}, with enough words "
                  "to count as body text for the extractor.</p>" for i in range(4))
        + "</article></body></html>"
    )


def crawl(sources: Path, name: str, home: Path) -> subprocess.CompletedProcess[str]:
    # AutoThrottle's 1 s start delay only slows a crawl of a handful of local pages.
    return harvest("--sources", str(sources), "crawl", name,
                   "-s", "AUTOTHROTTLE_START_DELAY=0.05", home=home)


def count(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def last_run(db: psycopg.Connection[Any]) -> dict[str, Any]:
    row = db.execute("SELECT stats, errors FROM crawl_runs ORDER BY started_at DESC LIMIT 1"
                     ).fetchone()
    assert row is not None
    return {**row[0], "errors": row[1]}


# -- parser ----------------------------------------------------------------------------------


def test_gzip_is_recognised_by_its_bytes_not_its_name() -> None:
    xml = urlset([("https://a.example/1", OLD), ("https://a.example/2", None)]).encode()
    packed = parse_sitemap(gzip.compress(xml), "https://a.example/sitemap.xml")
    plain_named_gz = parse_sitemap(xml, "https://a.example/sitemap.xml.gz")
    for parsed in (packed, plain_named_gz):
        assert parsed.kind == "urlset" and parsed.error is None
        assert [u.loc for u in parsed.urls] == ["https://a.example/1", "https://a.example/2"]
    assert packed.gzipped and not plain_named_gz.gzipped
    text = parse_sitemap(gzip.compress(b"\xef\xbb\xbfhttps://a.example/x\n\nnot a url\n"))
    assert text.kind == "text" and [u.loc for u in text.urls] == ["https://a.example/x"]
    assert [(r.reason, r.raw["line"]) for r in text.rejects] == [("not_http_url", 3)]
    # A text sitemap whose gzip stream was cut: the URLs before the cut, not the half URL
    # it ended in (stored as a page "…/page-number-1"), and an error that fails the source.
    lines = "".join(f"https://a.example/page-number-{i:03d}\n" for i in range(300)).encode()
    packed_lines = gzip.compress(lines)
    cut = parse_sitemap(packed_lines[:len(packed_lines) // 2])
    assert cut.error == "gzip stream is cut short or corrupt" and not cut.rejects
    assert 0 < len(cut.urls) < 300
    assert all(len(u.loc) == len("https://a.example/page-number-000") for u in cut.urls)
    assert parse_sitemap(packed_lines).error is None
    # `harvest rejects` showed "-" for it: the bad line is what the operator needs.
    row = {"id": 1, "created_at": datetime(2026, 11, 29, tzinfo=UTC), "source": "s",
           "reason": "not_http_url", "field": "loc", "url": None, "raw": text.rejects[0].raw}
    console = Console(width=200, record=True)
    console.print(rejects_table([row]))
    assert "line 3: not a url" in console.export_text()
    # A rejected URL of thousands of characters is cut, not printed over hundreds of lines.
    console = Console(width=200, record=True)
    console.print(rejects_table([{**row, "url": "https://x.org/" + "a" * 9000}]))
    assert len(console.export_text()) < 2000
    # A sitemap's other rejections showed "-": two children too deep looked the same.
    console = Console(width=200, record=True)
    console.print(rejects_table([
        {**row, "reason": "sitemap_too_deep", "raw": {"loc": "https://a.example/deep.xml",
                                                      "max_depth": 4}},
        {**row, "reason": "page_gone", "raw": {"status": 410, "sitemap": "https://a/s.xml"}}]))
    shown = console.export_text()
    assert "https://a.example/deep.xml" in shown and "410" in shown, shown


def test_namespaces_news_fields_and_relative_locs() -> None:
    prefixed = (
        '<sit:urlset xmlns:sit="http://www.sitemaps.org/schemas/sitemap/0.9" '
        f'{NEWS_NS} xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">'
        "<sit:url><sit:loc> /world/storm.html </sit:loc><sit:lastmod>2024-05-02</sit:lastmod>"
        "<image:image><image:loc>https://cdn.example/pic.jpg</image:loc></image:image>"
        "<news:news><news:publication><news:name>Times</news:name>"
        "<news:language>de</news:language></news:publication>"
        "<news:publication_date>2024-05-01T08:30:00+02:00</news:publication_date>"
        "<news:title>Storm hits coast</news:title>"
        "<news:keywords>weather, storm ,</news:keywords></news:news></sit:url>"
        "<sit:url><sit:lastmod>2024-05-02</sit:lastmod></sit:url></sit:urlset>"
    ).encode()
    parsed = parse_sitemap(prefixed, "https://news.example/sitemap.xml")
    assert parsed.kind == "urlset"
    [entry] = parsed.urls
    assert entry.loc == "https://news.example/world/storm.html"  # not the image's loc
    assert entry.news_title == "Storm hits coast"
    assert entry.news_keywords == ("weather", "storm")
    assert entry.news_language == "de"
    assert entry.news_published == datetime(2024, 5, 1, 6, 30, tzinfo=UTC)
    assert entry.lastmod == datetime(2024, 5, 2, tzinfo=UTC)
    assert entry.lastmod_until == datetime(2024, 5, 3, 12, tzinfo=UTC)
    assert [r.reason for r in parsed.rejects] == ["missing_loc"]
    bare = parse_sitemap(b"<urlset><url><loc>https://x.example/a</loc></url></urlset>")
    assert [u.loc for u in bare.urls] == ["https://x.example/a"]


def test_locs_that_are_no_web_address_and_marked_up_news_titles() -> None:
    # "http://" was joined into the sitemap's own address and stored as a page of it.
    doc = urlset([("http://", None), ("http:/one-slash", None), ("/rel/a.html", None)])
    parsed = parse_sitemap(doc.encode(), "https://e.example/sitemap.xml")
    assert [u.loc for u in parsed.urls] == ["https://e.example/rel/a.html"]
    assert [r.raw["loc"] for r in parsed.rejects] == ["http://", "http:/one-slash"]
    news = (f'<urlset {NS} xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">'
            "<url><loc>https://e.example/n</loc><news:news><news:title>"
            "&lt;b&gt;Bold&lt;/b&gt; &amp;amp; title</news:title></news:news></url></urlset>")
    [entry] = parse_sitemap(news.encode()).urls
    assert entry.news_title == "Bold & title"  # as feed titles are read


def test_utf16_sitemaps_and_a_doctype_with_an_internal_subset_are_read() -> None:
    # UTF-16 was taken for a text sitemap ("no line is a URL"); the DOCTYPE's subset made
    # the root element "<?>".
    doc = urlset([("https://e.example/ü", None)]).replace('encoding="UTF-8"',
                                                           'encoding="UTF-16"')
    for body in (b"\xff\xfe" + doc.encode("utf-16-le"), doc.encode("utf-16-be")):
        parsed = parse_sitemap(body, "https://e.example/s.xml")
        assert (parsed.error, [u.loc for u in parsed.urls]) == (None, ["https://e.example/ü"])
    subset = urlset([("https://e.example/a", None)]).replace(
        "?>", '?><!DOCTYPE urlset [<!ENTITY x "y">]>', 1)
    assert [u.loc for u in parse_sitemap(subset.encode()).urls] == ["https://e.example/a"]


def test_xml_is_read_as_leniently_as_a_feeds() -> None:
    # A bare & (an unescaped query string) made the rest of the document unusable.
    doc = (f"<urlset {NS} {NEWS_NS}><url><loc>https://e.example/a?x=1&y=2</loc><news:news>"
           "<news:title>Tom&nbsp;&amp; Jerry\x0b</news:title></news:news></url>"
           "<url><loc>https://e.example/b</loc></url></urlset>")
    parsed = parse_sitemap(doc.encode())
    assert parsed.error is None
    assert [(u.loc, u.news_title) for u in parsed.urls] == [
        ("https://e.example/a?x=1&y=2", "Tom & Jerry"), ("https://e.example/b", None)]


def test_one_huge_sitemap_keeps_the_cursor_within_its_cap() -> None:
    # 60,000 undated URLs kept 60,000 fingerprints (a 720 KB cursor) past MAX_SEEN.
    spider = SitemapSpider()
    run = _Run(since=None, pattern=None, follow=False, limit=None, known=set(), seen={})
    fingerprints = [f"{n:012x}" for n in range(MAX_SEEN + 5_000)]
    spider._remember(run, "https://e.example/big.xml", fingerprints)
    assert len(run.seen["https://e.example/big.xml"]) == MAX_SEEN * 12


def test_broken_documents_keep_what_came_before_the_damage() -> None:
    cut = urlset([("https://a.example/1", OLD), ("https://a.example/2", OLD)])[:-40]
    parsed = parse_sitemap(cut.encode())
    assert parsed.error and parsed.error.startswith("not well-formed XML")
    assert [u.loc for u in parsed.urls] == ["https://a.example/1"]
    html = parse_sitemap(b"<!doctype html><html><body>Not found</body></html>")
    assert html.kind == "unknown" and html.error == "not a sitemap (root element <html>)"
    assert parse_sitemap(b"\x1f\x8b\x08garbage").error == "gzip stream is corrupt"
    assert parse_sitemap(b"  \n").error == "empty document"
    entity = (b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
              b"<urlset><url><loc>https://a.example/&x;</loc></url></urlset>")
    assert "root:" not in repr(parse_sitemap(entity))


def test_index_robots_and_dates() -> None:
    parsed = parse_sitemap(index([("https://a.example/s1.xml", "2024-05-01"),
                                  ("https://a.example/s2.xml.gz", None)]).encode())
    assert parsed.kind == "sitemapindex" and not parsed.urls
    assert [s.loc for s in parsed.sitemaps] == ["https://a.example/s1.xml",
                                                "https://a.example/s2.xml.gz"]
    robots = b"User-agent: *\nDisallow: /x\nSitemap: /s.xml\nsitemap: https://b.example/s\n"
    assert robots_sitemaps(robots, "https://a.example/robots.txt") == [
        "https://a.example/s.xml", "https://b.example/s"]
    # A lastmod without a time is its whole year, month or day, in any zone (to UTC-12).
    assert parse_lastmod("2024-05") == (datetime(2024, 5, 1, tzinfo=UTC),
                                        datetime(2024, 6, 1, 12, tzinfo=UTC))
    assert parse_lastmod("2024-12") == (datetime(2024, 12, 1, tzinfo=UTC),
                                        datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert parse_lastmod("2024") == (datetime(2024, 1, 1, tzinfo=UTC),
                                     datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert parse_lastmod("2024-05-01T10:00:00") == (datetime(2024, 5, 1, 10, tzinfo=UTC), None)
    assert parse_lastmod("yesterday") == (None, None)
    # Past what a datetime holds: an unreadable date, not an OverflowError failing the
    # whole sitemap (the year 9999's day ended one only on the run after it was seen).
    assert parse_lastmod("9999-12-31T23:59:59-01:00") == (None, None)
    assert parse_lastmod("0001-01-01T00:00:00+01:00") == (None, None)
    [last] = parse_sitemap(urlset([("https://a.example/9", "9999-12-31")]).encode()).urls
    assert newer_than(last, datetime(2026, 11, 29, tzinfo=UTC))
    # A page changed today is newer than this morning; "2024-05-01" written in California
    # can mean 2024-05-02 06:59 UTC.
    [day] = parse_sitemap(urlset([("https://a.example/1", "2024-05-01")]).encode()).urls
    assert newer_than(day, datetime(2024, 5, 1, 9, tzinfo=UTC))
    assert newer_than(day, datetime(2024, 5, 2, 7, tzinfo=UTC))
    assert not newer_than(day, datetime(2024, 5, 2, 12, 1, tzinfo=UTC))
    [month] = parse_sitemap(urlset([("https://a.example/2", "2024-05")]).encode()).urls
    assert newer_than(month, datetime(2024, 5, 20, tzinfo=UTC))
    assert slug_title("https://a.example/news/big-storm_hits.coast.html") == "big storm hits coast"
    assert slug_title("https://a.example/2024/12345/") is None
    # Every ?id= page was titled "article" and, with no text, they became one story.
    assert slug_title("https://a.example/article.php?id=7") == "article 7"
    assert slug_title("https://a.example/item?id=7&lang=de%20at") == "item 7 de at"


# -- crawls ----------------------------------------------------------------------------------


def _write_site(root: Path, base: str, *, news_lastmod: str, stale_lastmod: str) -> None:
    """robots.txt → index.xml (listing itself too) → news.xml.gz + stale.xml → pages."""
    (root / "robots.txt").write_text(f"User-agent: *\nAllow: /\nSitemap: {base}/index.xml\n")
    (root / "index.xml").write_text(index([
        (f"{base}/news.xml.gz", news_lastmod),
        (f"{base}/stale.xml", stale_lastmod),
        (f"{base}/index.xml", None),
    ]))
    (root / "stale.xml").write_text(urlset([(f"{base}/a/old.html", OLD)]))
    (root / "a").mkdir(exist_ok=True)
    for name, title in (("one", "Harbour reopens"), ("two", "Bridge closed"),
                        ("three", "Library expands"), ("old", "Old archive page"),
                        ("plain", "Undated page")):
        (root / "a" / f"{name}.html").write_text(
            article(title, "Ana Writer", "2024-02-29T09:00:00Z"))


def _news(root: Path, base: str, entries: list[tuple[str, str | None]]) -> None:
    (root / "news.xml.gz").write_bytes(gzip.compress(urlset(entries).encode()))


def test_crawl_through_robots_index_and_gzip_then_only_what_changed(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    base = site.url
    _write_site(site.root, base, news_lastmod=OLD, stale_lastmod=OLD)
    _news(site.root, base, [(f"{base}/a/one.html", OLD), (f"{base}/a/two.html", OLD),
                            (f"{base}/a/plain.html", None), (f"{base}/a/skip.pdf", OLD)])
    sources = write_sources(tmp_path / "s.toml", [{
        "name": "site", "kind": "sitemap", "urls": [f"{base}/robots.txt"],
        "url_pattern": r"\.html$",
    }])

    first = crawl(sources, "site", home)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout
    rows = db.execute("SELECT url, title, author, published_at, feed_url FROM signals "
                      "ORDER BY url").fetchall()
    assert [(r[0].rsplit("/", 1)[1], r[1], r[2]) for r in rows] == [
        ("old.html", "Old archive page", "Ana Writer"),
        ("one.html", "Harbour reopens", "Ana Writer"),
        ("plain.html", "Undated page", "Ana Writer"),
        ("two.html", "Bridge closed", "Ana Writer"),
    ]
    assert all(r[3] == datetime(2024, 2, 29, 9, tzinfo=UTC) for r in rows)
    assert {r[4] for r in rows} == {f"{base}/news.xml.gz", f"{base}/stale.xml"}
    assert site.hits("/index.xml") == 1  # listed in itself, fetched once
    assert site.hits("/a/skip.pdf") == 0  # url_pattern
    stats = last_run(db)
    assert stats["errors"] == 0 and stats["harvest/source/site/filtered"] == 1

    # Later: one.html changed and three.html is new (both dated), another undated page
    # appears; the index says news.xml.gz changed, stale.xml did not.
    now = datetime.now(UTC).isoformat()
    (site.root / "a" / "four.html").write_text(article("Fourth", "B", "2024-03-01T00:00:00Z"))
    _write_site(site.root, base, news_lastmod=now, stale_lastmod=OLD)
    _news(site.root, base, [(f"{base}/a/one.html", now), (f"{base}/a/two.html", OLD),
                            (f"{base}/a/three.html", now), (f"{base}/a/plain.html", None),
                            (f"{base}/a/four.html", None)])
    second = crawl(sources, "site", home)
    assert second.returncode == 0, second.stderr[-3000:]
    hits = {name: site.hits(f"/a/{name}.html")
            for name in ("one", "two", "three", "four", "plain", "old")}
    assert hits == {"one": 2, "two": 1, "three": 1, "four": 1, "plain": 1, "old": 1}
    assert site.hits("/stale.xml") == 1  # its lastmod in the index did not move
    assert count(db, "SELECT count(*) FROM signals") == 6
    stats = last_run(db)
    assert stats["errors"] == 0 and stats["harvest/source/site/unchanged"] == 3


def test_pages_a_partly_failed_run_missed_are_fetched_by_the_next(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A partly failed run moved the reference point (the last success) past the lastmod of
    # a page that answered 500 and of pages on a host whose robots.txt answered 503 (a
    # refusal that did not even count as an error): no later run asked for them again.
    (site.root / "p").mkdir()
    for name in ("ok", "flaky", "cdn"):
        (site.root / "p" / f"{name}.html").write_text(
            article(f"The {name} page", "Ana Writer", "2024-02-29T09:00:00Z"))
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    with LocalSite(site.root, host="127.0.0.2") as cdn:
        (site.root / "s.xml").write_text(urlset([
            (f"{site.url}/p/ok.html", hour_ago), (f"{site.url}/p/flaky.html", hour_ago),
            (f"{cdn.url}/p/cdn.html", hour_ago)]))
        sources = write_sources(tmp_path / "s.toml", [
            {"name": "site", "kind": "sitemap", "urls": [f"{site.url}/s.xml"]}])
        site.set_status("/p/flaky.html", 500)
        cdn.set_status("/robots.txt", 503)
        first = crawl(sources, "site", home)
        assert "partly failed site" in first.stdout, first.stdout
        assert "forbidden by robots.txt (it answered HTTP 503" in " ".join(first.stdout.split())
        assert cdn.hits("/p/cdn.html") == 0
        assert [u for (u,) in db.execute("SELECT url FROM signals").fetchall()] == [
            f"{site.url}/p/ok.html"]
        assert last_run(db)["errors"] == 2

        site.clear_overrides()
        cdn.clear_overrides()
        second = crawl(sources, "site", home)
        assert second.returncode == 0, second.stdout + second.stderr
        assert cdn.hits("/p/cdn.html") == 1
    assert count(db, "SELECT count(*) FROM signals") == 3
    # A run in which nothing failed is the next reference point: nothing is taken again.
    third = crawl(sources, "site", home)
    assert third.returncode == 0 and site.hits("/p/ok.html") == 2, third.stdout


def test_a_page_listed_after_the_run_its_lastmod_predates_is_taken_once(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A sitemap regenerated by cron (or served from a cache) listed a page only after the
    # run that its lastmod predates: "unchanged" on every later run, never fetched.
    (site.root / "p").mkdir()
    for name in ("early", "late"):
        (site.root / "p" / f"{name}.html").write_text(
            article(f"The {name} page", "Ana Writer", "2024-02-29T09:00:00Z"))
    now = datetime.now(UTC)
    early = (f"{site.url}/p/early.html", (now - timedelta(hours=1)).isoformat())
    (site.root / "s.xml").write_text(urlset([early]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "site", "kind": "sitemap", "urls": [f"{site.url}/s.xml"]}])
    assert crawl(sources, "site", home).returncode == 0
    (site.root / "s.xml").write_text(urlset([
        early, (f"{site.url}/p/late.html", (now - timedelta(minutes=30)).isoformat())]))
    second = crawl(sources, "site", home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert last_run(db)["harvest/source/site/listed_late"] == 1
    third = crawl(sources, "site", home)
    assert third.returncode == 0, third.stdout + third.stderr
    # Each fetched once: the early one is known by its fingerprint, not taken again.
    assert (site.hits("/p/early.html"), site.hits("/p/late.html")) == (1, 1)
    assert count(db, "SELECT count(*) FROM signals") == 2


def test_a_listed_url_too_long_to_send_is_a_rejection_not_a_failure(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # The site's URL, not the source's settings: as an error it failed every run, and the
    # source never kept a reference point again.
    (site.root / "p").mkdir()
    (site.root / "p" / "ok.html").write_text(article("Fine", "Ana Writer", "2024-02-29"))
    long_url = f"{site.url}/p/x.html?ref=" + "y" * 8300
    (site.root / "s.xml").write_text(urlset([(f"{site.url}/p/ok.html", OLD),
                                             (long_url, OLD)]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "site", "kind": "sitemap", "urls": [f"{site.url}/s.xml"]}])
    result = crawl(sources, "site", home)
    assert result.returncode == 0 and "failed" not in result.stdout, result.stdout
    reason, raw = db.execute("SELECT reason, raw FROM rejects").fetchone()
    assert (reason, raw["length"]) == ("url_too_long", len(long_url))
    assert count(db, "SELECT count(*) FROM signals") == 1
    assert "since" in db.execute("SELECT cursor FROM sources_state").fetchone()[0]


def test_disallowed_path_is_never_requested(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    base = site.url
    (site.root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    (site.root / "sitemap.xml").write_text(
        urlset([(f"{base}/private/x.html", None), (f"{base}/public/y.html", None)]))
    for folder, title in (("private", "Secret"), ("public", "Open news")):
        (site.root / folder).mkdir()
        (site.root / folder / ("x.html" if folder == "private" else "y.html")).write_text(
            article(title, "C", "2024-01-01T00:00:00Z"))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "polite", "kind": "sitemap", "urls": [f"{base}/sitemap.xml"], "follow": True},
    ])
    result = crawl(sources, "polite", home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert site.hits("/private/x.html") == 0
    assert site.hits("/public/y.html") == 1
    assert db.execute("SELECT title FROM signals").fetchall() == [("Open news",)]
    stats = last_run(db)
    assert stats["harvest/source/polite/robots_forbidden"] == 1 and stats["errors"] == 0


def test_a_sitemap_found_in_robots_txt_that_is_gone_is_not_the_sources_files_fault(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # The hint said "fix it in the sources file", which does not list that URL.
    (site.root / "robots.txt").write_text(f"Sitemap: {site.url}/missing.xml\n"
                                          "Sitemap: ftp://files.example/sitemap.xml\n")
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "gone", "kind": "sitemap", "urls": [f"{site.url}/robots.txt"]}])
    result = crawl(sources, "gone", home)
    [line] = [ln for ln in result.stdout.splitlines() if "failed gone:" in ln]
    assert "HTTP 404 (not found: what linked to it is out of date)" in line, line
    # An ftp:// Sitemap line was passed over without a word.
    assert db.execute("SELECT reason, raw->>'loc' FROM rejects").fetchall() == [
        ("not_http_url", "ftp://files.example/sitemap.xml")]


def test_nesting_past_four_levels_is_rejected_and_a_back_link_is_no_level(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # i0 → i1 → … → i5; i4 also links back to i3, which was counted as "too deep".
    base = site.url
    for n in range(6):
        children = [(f"{base}/i{n + 1}.xml", None)] + (
            [(f"{base}/i3.xml", None)] if n == 4 else [])
        (site.root / f"i{n}.xml").write_text(index(children))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "deep", "kind": "sitemap", "urls": [f"{base}/i0.xml"], "follow": False}])
    crawl(sources, "deep", home)
    assert db.execute("SELECT reason, raw->>'loc' FROM rejects").fetchall() == [
        ("sitemap_too_deep", f"{base}/i5.xml")]  # five documents read: i0 … i4
    assert [site.hits(f"/i{n}.xml") for n in range(6)] == [1, 1, 1, 1, 1, 0]


def test_a_listed_pdf_keeps_the_sitemaps_fields_not_its_bytes(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Its raw bytes were stored as the article text (10,182 characters of PDF).
    base = site.url
    (site.root / "sitemap.xml").write_text(urlset([(f"{base}/files/annual-report.pdf", None)]))
    (site.root / "files").mkdir()
    (site.root / "files" / "annual-report.pdf").write_bytes(b"%PDF-1.4\n" + bytes(2000))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "pdf", "kind": "sitemap", "urls": [f"{base}/sitemap.xml"], "follow": True}])
    result = crawl(sources, "pdf", home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert db.execute("SELECT title, text FROM signals").fetchall() == [
        ("annual report", None)]  # the title from its address, as without follow
    assert last_run(db)["harvest/source/pdf/page_not_html"] == 1


def crawl_news(site: LocalSite, home: Path, tmp_path: Path, urls: str,
               **extra: Any) -> subprocess.CompletedProcess[str]:
    """Serve a news sitemap of ``urls`` (``<url>`` elements) and crawl it without following
    its pages, as the source ``news``."""
    (site.root / "news.xml").write_text(
        f'<?xml version="1.0"?><urlset {NS} {NEWS_NS}>{urls}</urlset>')
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "news", "kind": "sitemap", "urls": [f"{site.url}/news.xml"], "follow": False,
         **extra}])
    return crawl(sources, "news", home)


def test_without_follow_news_fields_make_the_signal_and_limit_caps(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    base = site.url
    result = crawl_news(site, home, tmp_path, (
        f"<url><loc>{base}/n/merger.html</loc><lastmod>2024-05-03</lastmod><news:news>"
        "<news:publication_date>2024-05-02T12:00:00Z</news:publication_date>"
        "<news:title>Companies in merger talks</news:title>"
        "<news:keywords>business, merger</news:keywords></news:news></url>"
        f"<url><loc>{base}/n/quiet-harbour-day.html</loc><lastmod>2024-05-01</lastmod></url>"
        # Listed twice in one sitemap: it took two of the limit's places.
        f"<url><loc>{base}/n/merger.html</loc><lastmod>2024-05-03</lastmod></url>"
        f"<url><loc>{base}/n/oldest.html</loc><lastmod>2024-04-01</lastmod></url>"), limit=2)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = db.execute("SELECT title, tags, published_at, updated_at FROM signals "
                      "ORDER BY published_at DESC").fetchall()
    assert rows == [
        ("Companies in merger talks", ["business", "merger"],
         datetime(2024, 5, 2, 12, tzinfo=UTC), datetime(2024, 5, 3, tzinfo=UTC)),
        ("quiet harbour day", [], datetime(2024, 5, 1, tzinfo=UTC),
         datetime(2024, 5, 1, tzinfo=UTC)),
    ]
    assert site.hits("/n/merger.html") == 0  # follow = false: the page is not fetched
    assert last_run(db)["harvest/source/news/over_limit"] == 1  # the oldest one
    assert "over limit" in result.stdout  # it was only in crawl_runs.stats


def test_a_date_that_is_no_date_is_a_dropped_field_and_the_url_is_kept(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    base = site.url
    result = crawl_news(site, home, tmp_path, (
        f"<url><loc>{base}/n/a.html</loc><lastmod>last week</lastmod><news:news>"
        "<news:publication_date>TBD</news:publication_date>"
        "<news:title>Port strike ends</news:title></news:news></url>"
        f"<url><loc>{base}/n/b.html</loc><lastmod>2024-05-01</lastmod></url>"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(db.execute("SELECT title, updated_at FROM signals").fetchall())
    assert rows == {"Port strike ends": None, "b": datetime(2024, 5, 1, tzinfo=UTC)}
    stats = last_run(db)
    assert stats["harvest/by_source"]["news"]["dropped"] == {
        "lastmod": 1, "news:publication_date": 1}
    assert "(lastmod ×1, news:publication_date ×1)" in " ".join(result.stdout.split())


def test_a_sitemaps_charset_is_decided_as_a_feeds_is(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # lxml trusts the XML declaration alone: a sitemap whose charset only the HTTP header
    # gave (valid XML, RFC 7303) failed every run and stored nothing, not even its ASCII
    # URLs; one declared UTF-8 but written in windows-1252 lost every URL from the first
    # bad byte on.
    def news(charset: str, declaration: str, titles: dict[str, str]) -> Reply:
        rows = "".join(f"<url><loc>{api.url}/p/{name}</loc><news:news><news:title>{title}"
                       "</news:title></news:news></url>" for name, title in titles.items())
        body = f"{declaration}<urlset {NS} {NEWS_NS}>{rows}</urlset>".encode(charset)
        header = "application/xml" if "encoding" in declaration else f"text/xml; charset={charset}"
        return Reply(200, body, {"Content-Type": header})

    bare = '<?xml version="1.0"?>'
    api.add("/latin.xml", lambda _: news("iso-8859-1", bare, {"a": "Café ouvert", "b": "Plain"}))
    # The header decides: detection alone reads these bytes as "Za¿ó³æ gê¶l±".
    api.add("/polish.xml", lambda _: news("iso-8859-2", bare, {"c": "Zażółć gęślą"}))
    api.add("/windows.xml", lambda _: news(
        "cp1252", '<?xml version="1.0" encoding="UTF-8"?>', {"d": "“Naïve” café", "e": "Last"}))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "charsets", "kind": "sitemap", "follow": False,
         "urls": [f"{api.url}/{name}.xml" for name in ("latin", "polish", "windows")]}])
    result = crawl(sources, "charsets", home)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert dict(db.execute("SELECT url, title FROM signals").fetchall()) == {
        f"{api.url}/p/a": "Café ouvert", f"{api.url}/p/b": "Plain",
        f"{api.url}/p/c": "Zażółć gęślą", f"{api.url}/p/d": "“Naïve” café",
        f"{api.url}/p/e": "Last"}
    assert db.execute("SELECT reason FROM rejects").fetchall() == []


@pytest.mark.parametrize("body", [b"<urlset><url><loc>https://a.example/1</loc>",
                                  b"<html><body>Sorry, moved</body></html>"])
def test_malformed_sitemap_is_a_rejection_and_a_failure(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path, body: bytes
) -> None:
    (site.root / "bad.xml").write_bytes(body)
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "bad", "kind": "sitemap", "urls": [f"{site.url}/bad.xml"], "follow": False},
    ])
    result = crawl(sources, "bad", home)
    assert result.returncode != 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # One line naming the source, the URL and what is wrong with it.
    assert f"bad: {site.url}/bad.xml: not a usable sitemap: " in result.stdout
    reasons = db.execute("SELECT reason, field FROM rejects").fetchall()
    assert ("unusable_document", "document") in reasons
    assert count(db, "SELECT consecutive_failures FROM sources_state WHERE source='bad'") == 1


def test_unchanged_index_still_leads_to_changed_sitemaps(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    """The index is byte-for-byte the same on the second run (and says no lastmod), but the
    sitemap it lists gained a page: the page must still be found. Guards against making
    sitemap documents conditional (a 304 on the index would hide its children)."""
    base = site.url
    (site.root / "index.xml").write_text(index([(f"{base}/pages.txt", None)]))
    (site.root / "pages.txt").write_text(f"{base}/first-story.html\n")
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "idx", "kind": "sitemap", "urls": [f"{base}/index.xml"], "follow": False},
    ])
    assert crawl(sources, "idx", home).returncode == 0
    (site.root / "pages.txt").write_text(f"{base}/first-story.html\n{base}/second-story.html\n")
    second = crawl(sources, "idx", home)
    assert second.returncode == 0, second.stderr[-3000:]
    titles = [r[0] for r in db.execute("SELECT title FROM signals ORDER BY title")]
    assert titles == ["first story", "second story"]
    # Second run: only the new undated URL was taken, the known one was not taken again.
    assert last_run(db)["harvest/source/idx/entries"] == 1
