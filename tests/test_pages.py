"""The pages spider: real ``harvest crawl`` runs over a small listing site on 127.0.0.1
into PostgreSQL, plus the selector rules it is configured with."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from parsel import Selector
from pydantic import ValidationError

from harvester.parsers import selectors
from harvester.services.localsite import LocalSite
from harvester.sources import Source
from harvester.spiders.pages import listing_fields
from tests.conftest import harvest, write_sources

CSS_FIELDS = {"url": "h2 a", "title": "h2 a::text", "text": "p.teaser",
              "author": ".by::text", "published": "time::attr(datetime)", "tags": ".tag::text"}


def listing(items: list[str], next_href: str | None = None) -> str:
    nav = f'<a class="next" href="{next_href}">Older</a>' if next_href else ""
    return (f'<html><head><meta charset="utf-8"><title>News</title></head><body>'
            f'<header><a href="/">Home</a></header><main>{"".join(items)}</main>'
            f"<nav>{nav}</nav></body></html>")


def card(href: str | None, title: str | None, *, teaser: str = "", author: str = "",
         published: str = "", tags: tuple[str, ...] = ()) -> str:
    link = f'<h2><a href="{href}">{title or ""}</a></h2>' if href else (
        f"<h2>{title}</h2>" if title else "")
    parts = [link]
    if teaser:
        parts.append(f'<p class="teaser">{teaser}</p>')
    if author:
        parts.append(f'<span class="by">{author}</span>')
    if published:
        parts.append(f'<time datetime="{published}">{published}</time>')
    parts += [f'<a class="tag" href="/t/{t}">{t}</a>' for t in tags]
    return f'<article class="card">{"".join(parts)}</article>'


def article_page(title: str, author: str, published: str, body: str) -> str:
    ld = {"@context": "https://schema.org", "@type": "NewsArticle", "headline": title,
          "author": {"@type": "Person", "name": author}, "datePublished": published}
    paragraphs = "".join(f"<p>{body} Paragraph {i} goes on long enough to be read as the "
                         f"article body by the extractor.</p>" for i in range(5))
    return (f'<html lang="en"><head><meta charset="utf-8"><title>{title} | News</title>'
            f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
            f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1>{paragraphs}"
            f"</article></body></html>")


def build_site(root: Path) -> None:
    (root / "news").mkdir()
    (root / "news" / "index.html").write_text(listing([
        card("/news/a/one.html", "Full card", teaser="Teaser one.",
             author="Ada", published="2024-05-01T10:00:00+02:00", tags=("ai", "ai", "db")),
        card("a/two.html", "Second story"),
        card(None, None, teaser="An advert with neither link nor headline."),
    ], next_href="/news/page2.html"), "utf-8")
    (root / "news" / "page2.html").write_text(listing([
        card("/news/a/three.html", None),
        card("/news/a/gone.html", "Gone story", teaser="Only the teaser survives."),
    ], next_href="/news/page3.html"), "utf-8")
    (root / "news" / "page3.html").write_text(listing([card("/x.html", "Beyond max")]))
    (root / "news" / "a").mkdir()
    (root / "news" / "a" / "one.html").write_text(article_page(
        "One, as the article page has it", "Somebody Else", "2020-01-01", "One."), "utf-8")
    (root / "news" / "a" / "two.html").write_text(article_page(
        "Second story, full headline", "Grace Hopper", "2024-04-30T08:00:00Z",
        "Compilers."), "utf-8")
    (root / "news" / "a" / "three.html").write_text(article_page(
        "Third story", "Alan Turing", "2024-04-29", "Machines."), "utf-8")


def pages_source(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "pages", "urls": [url], "item_selector": "article.card",
            **extra}


def signals(db: psycopg.Connection[Any], source: str) -> dict[str, tuple[Any, ...]]:
    rows = db.execute("SELECT url, title, author, published_at, text, tags, feed_url "
                      "FROM signals WHERE source = %s", (source,)).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_listing_pages_followed_to_articles(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    build_site(site.root)
    sources = tmp_path / "s.toml"
    write_sources(sources, [pages_source("news", f"{site.url}/news/index.html",
                                         next_page="a.next", max_pages=2, follow=True)])
    # fields is a table: appended by hand, write_sources only writes flat values.
    with sources.open("a", encoding="utf-8") as out:
        out.write("[sources.fields]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in CSS_FIELDS.items()))

    result = harvest("--sources", str(sources), "crawl", "news", home=home)

    assert result.returncode == 0, result.stderr + result.stdout
    got = signals(db, "news")
    base = f"{site.url}/news"
    assert set(got) == {f"{base}/a/one.html", f"{base}/a/two.html",
                        f"{base}/a/three.html", f"{base}/a/gone.html"}
    # A complete listing card keeps its own fields over the article page's; tags are
    # de-duplicated.
    title, author, published, text, tags, feed_url = got[f"{base}/a/one.html"]
    assert (title, author, text, tags) == ("Full card", "Ada", "Teaser one.", ["ai", "db"])
    assert published == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert feed_url == f"{base}/index.html"
    # Relative link resolved; the listing title wins, the article page fills the rest.
    title, author, published, text, _, _ = got[f"{base}/a/two.html"]
    assert (title, author) == ("Second story", "Grace Hopper")
    assert published == datetime(2024, 4, 30, 8, 0, tzinfo=UTC)
    assert "Compilers. Paragraph 3" in text
    # Found on page 2 with a link only: everything comes from the article.
    title, author, published, _, _, feed_url = got[f"{base}/a/three.html"]
    assert (title, author, feed_url) == ("Third story", "Alan Turing", f"{base}/page2.html")
    assert published == datetime(2024, 4, 29, tzinfo=UTC)
    # The article is 404: the item is kept with what the listing had.
    assert got[f"{base}/a/gone.html"][:4] == ("Gone story", None, None,
                                                "Only the teaser survives.")
    assert db.execute("SELECT reason, field, url FROM rejects").fetchall() == [
        ("missing_url_and_title", "url", f"{base}/index.html")]
    assert site.hits("/news/page3.html") == 0  # max_pages = 2
    stats = db.execute("SELECT errors, stats FROM crawl_runs").fetchone()
    assert stats[0] == 0
    assert stats[1]["harvest/source/news/missing"] == 1
    assert stats[1]["harvest/source/news/fetched"] == 5  # 2 listings + 3 articles
    state = db.execute("SELECT consecutive_failures, last_success IS NOT NULL "
                       "FROM sources_state WHERE source = 'news'").fetchone()
    assert state == (0, True)

    # Next run the article host fails: two.html is gone, gone.html asks for a pause longer
    # than the crawl waits. The items are seen again, and keep the article text, author
    # and date the first run read (the listing's fields alone replaced them: wiped); the
    # rate limit is an error of the source, as for every other kind (it was only logged).
    index = site.root / "news" / "index.html"
    index.write_text(index.read_text("utf-8") + "<!-- changed -->", "utf-8")  # not a 304
    site.set_status("/news/a/two.html", 404)
    site.set_status("/news/a/gone.html", 429, {"Retry-After": "100000"})
    result = harvest("--sources", str(sources), "crawl", "news", home=home)

    assert result.returncode == 0, result.stderr + result.stdout  # the listings answered
    assert "rate limited" in result.stdout and "HARVEST_RETRY_AFTER_MAX" in result.stdout
    again = signals(db, "news")
    for url in (f"{base}/a/two.html", f"{base}/a/gone.html"):
        assert again[url] == got[url]
    assert db.execute("SELECT seen_count FROM signals WHERE url = %s",
                      (f"{base}/a/two.html",)).fetchone() == (2,)
    state = db.execute("SELECT consecutive_failures, last_error FROM sources_state "
                       "WHERE source = 'news'").fetchone()
    assert state is not None and state[0] == 0  # partly failed: the listing gave its items
    assert state[1].startswith(f"{base}/a/") and "rate limited" in state[1]
    # One error for the one 429: the articles after it, refused on the same closed gate,
    # are missing, not an error each.
    errors = db.execute("SELECT errors FROM crawl_runs ORDER BY started_at DESC LIMIT 1")
    assert errors.fetchone() == (1,)

    # The host is back, the listing unchanged: it is asked for whole again (a 304 left the
    # failed articles unread for as long as the listing did not change).
    site.clear_overrides()
    before = site.hits("/news/a/two.html")
    result = harvest("--sources", str(sources), "crawl", "news", home=home)
    assert result.returncode == 0, result.stderr + result.stdout
    assert site.hits("/news/a/two.html") == before + 1
    assert signals(db, "news")[f"{base}/a/two.html"] == got[f"{base}/a/two.html"]


def test_entries_anchored_on_the_listing_page_itself_are_items_of_their_own(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A changelog or advisory page lists its entries as anchors on itself: the fragment
    # was dropped from the key, so the first entry was stored and the others counted as
    # duplicates; with follow = true each card fetched the listing page as its "article".
    (site.root / "changes.html").write_text(listing([
        card("#v2", "Version 2 fixes a ransomware hole", teaser="Patch now."),
        card("changes.html#v1", "Version 1", teaser="First release."),
        card(f"{site.url}/changes.html?utm_source=x#v0", "Version 0", teaser="Preview."),
        card("/blog/post.html#comments", "A blog post", teaser="Elsewhere."),
        card("/blog/post.html", "The same blog post", teaser="Again."),
    ]), "utf-8")
    (site.root / "blog").mkdir()
    (site.root / "blog" / "post.html").write_text(article_page(
        "A blog post", "Ada", "2024-05-01", "Words."), "utf-8")
    sources = tmp_path / "s.toml"
    write_sources(sources, [pages_source("log", f"{site.url}/changes.html", follow=True)])
    with sources.open("a", encoding="utf-8") as out:
        out.write("[sources.fields]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in CSS_FIELDS.items()))

    result = harvest("--sources", str(sources), "crawl", "log", home=home)

    assert result.returncode == 0, result.stderr + result.stdout
    rows = db.execute("SELECT title, canonical_url, text FROM signals "
                      "WHERE title LIKE 'Version%' ORDER BY title").fetchall()
    page = site.url.replace("http://", "https://") + "/changes.html"
    assert rows == [
        ("Version 0", f"{page}#v0", "Preview."),
        ("Version 1", f"{page}#v1", "First release."),
        ("Version 2 fixes a ransomware hole", f"{page}#v2", "Patch now."),
    ]
    # Another page's "#comments" is still that page: one item (whichever card's article
    # came back first), the other a duplicate.
    assert db.execute("SELECT count(*) FROM signals WHERE canonical_url LIKE "
                      "'%/blog/post.html'").fetchone() == (1,)
    stats = db.execute("SELECT stats FROM crawl_runs").fetchone()[0]
    assert stats["harvest/source/log/duplicates"] == 1
    assert site.hits("/changes.html") == 1 and site.hits("/blog/post.html") == 2


def test_xpath_selectors_and_a_listing_that_matches_nothing(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    build_site(site.root)
    (site.root / "redesigned.html").write_text(listing(['<div class="tile">New look</div>']))
    sources = tmp_path / "s.toml"
    xpath_fields = {"link": "./h2/a/@href", "title": "(.//h2)[1]",
                    "published": ".//time/@datetime"}
    write_sources(sources, [
        pages_source("xp", f"{site.url}/news/index.html",
                     item_selector="//article[@class='card']"),
        pages_source("redesigned", f"{site.url}/redesigned.html"),
    ])
    text = sources.read_text("utf-8")
    text = text.replace('name = "redesigned"',
                        'name = "redesigned"\nfields = {url = "h2 a", title = "h2"}')
    text = text.replace('name = "xp"', 'name = "xp"\nfields = ' + "{" + ", ".join(
        f"{k} = {json.dumps(v)}" for k, v in xpath_fields.items()) + "}")
    sources.write_text(text, "utf-8")

    result = harvest("--sources", str(sources), "crawl", "xp", "redesigned", home=home)

    got = signals(db, "xp")
    assert set(got) == {f"{site.url}/news/a/one.html", f"{site.url}/news/a/two.html"}
    assert got[f"{site.url}/news/a/one.html"][:3] == (
        "Full card", None, datetime(2024, 5, 1, 8, tzinfo=UTC))
    assert site.hits("/news/a/two.html") == 0  # follow is off
    assert site.hits("/news/page2.html") == 0  # no next_page
    state = dict(db.execute("SELECT source, consecutive_failures FROM sources_state"))
    assert state == {"xp": 0, "redesigned": 1}
    last_error = db.execute(
        "SELECT last_error FROM sources_state WHERE source = 'redesigned'").fetchone()[0]
    assert "matched nothing" in last_error
    assert "redesigned" in result.stdout


@pytest.mark.parametrize(("fields", "message"), [
    ({"text": "p"}, "a pages source needs a url (or link) selector: an item is stored by its "
                    "address"),
    # Every card was rejected (missing_url_and_id) and the crawl said it succeeded.
    ({"title": "h2"}, "a pages source needs a url (or link) selector"),
    ({"url": "a", "link": "a"}, "url and link are the same field; keep one"),
])
def test_fields_a_crawl_cannot_use_are_refused_with_the_file(
        fields: dict[str, str], message: str, tmp_path: Path) -> None:
    # Found only when crawled before: `sources check` said OK and every run failed.
    with pytest.raises(ValidationError, match=re.escape(message)):
        Source(name="s", kind="pages", urls=["https://example.org/"], item_selector="li",
               fields=fields)
    path = write_sources(tmp_path / "s.toml", [{
        "name": "s", "kind": "pages", "urls": ["https://example.org/"],
        "item_selector": "li", "fields": fields}])
    result = harvest("--sources", str(path), "sources", "check", home=tmp_path / "home")
    assert result.returncode == 2
    assert f"source 's', field 'fields': {message}" in result.stderr


@pytest.mark.parametrize(("kind", "fields", "extra", "message"), [
    ("pages", {"url": "a", "title": "h2[["}, {},
     "title: 'h2[[' cannot be used: it is not valid CSS"),
    ("pages", {"url": "a"}, {"next_page": "//a[@"},
     "'//a[@' cannot be used: it is not valid XPath"),
    # Passed the check, then failed every crawl ("SelectorSyntaxError", a callback error).
    ("pages", {"url": "a"}, {"next_page": "?page={page}"},
     "a {page} address template is for rendered sources"),
    # What the browser waits for and clicks failed in Playwright, past the check.
    # Every match was a string, and every one a rejection, run after run.
    ("pages", {"url": "a"}, {"item_selector": "article h2 a::attr(href)"},
     "selects text or attributes; it must select the elements that hold one item each"),
    ("pages", {"url": "a"}, {"item_selector": "//li/text()"}, "selects text or attributes"),
    ("rendered", {"url": "a"}, {"wait_for": "ul[data-loaded"},
     "'ul[data-loaded' cannot be used: it is not valid CSS"),
    ("rendered", {"url": "a"}, {"wait_for": "li::text"},
     "the browser takes plain CSS or XPath (no ::text or ::attr)"),
    ("rendered", {"url": "a"}, {"wait_for": "ul", "next_click": "button[x"},
     "'button[x' cannot be used"),
])
def test_selectors_that_do_not_parse_are_refused_with_the_file(
        kind: str, fields: dict[str, str], extra: dict[str, str], message: str) -> None:
    if kind == "rendered":
        extra = {"wait_for": "ul", **extra}
    extra = {"item_selector": "li", **extra}
    with pytest.raises(ValidationError, match=re.escape(message)):
        Source(name="s", kind=kind, urls=["https://example.org/"], fields=fields, **extra)


def test_unknown_field_fails_the_source_without_fetching(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    build_site(site.root)
    sources = write_sources(tmp_path / "s.toml", [pages_source("typo",
                                                               f"{site.url}/news/index.html")])
    sources.write_text(sources.read_text("utf-8").replace(
        'name = "typo"', 'name = "typo"\nfields = {title = "h2", headline = "h1"}'), "utf-8")

    result = harvest("--sources", str(sources), "crawl", "typo", home=home)

    # Caught when the sources file loads: one sentence, nothing fetched, nothing recorded.
    assert result.returncode == 2
    assert "source 'typo', field 'fields': 'headline' is not a field a pages source fills" in (
        result.stderr)
    assert site.hits("/news/index.html") == 0
    assert db.execute("SELECT 1 FROM sources_state WHERE source='typo'").fetchone() is None


def test_a_bad_card_or_a_pdf_behind_a_card_costs_only_that_card(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A link that does not parse raised in the middle of the listing: the cards after it
    # were lost. A PDF behind a card was stored with its raw bytes as the text.
    (site.root / "l").mkdir()
    (site.root / "l" / "index.html").write_text(listing([
        card("/l/report.pdf", "The report"),
        card("http://[::1", "Broken link"),
        card("/l/after.html", "After the broken one"),
        '<article class="card"><p class="ad">Sponsored: buy <b>now</b></p></article>']), "utf-8")
    (site.root / "l" / "report.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Title (x) >>\n"
                                                 + bytes(range(256)) * 8)
    (site.root / "l" / "after.html").write_text(
        article_page("After", "Ada", "2024-05-01", "Body."), "utf-8")
    (site.root / "l" / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    fields = {"title": "h2", "url": "h2 a::attr(href)"}
    sources = write_sources(tmp_path / "s.toml", [
        pages_source("cards", f"{site.url}/l/index.html", fields=fields, follow=True),
        pages_source("png", f"{site.url}/l/image.html", fields=fields)])
    result = harvest("--sources", str(sources), "crawl", "cards", "png", home=home)

    got = signals(db, "cards")
    assert set(got) == {f"{site.url}/l/report.pdf", f"{site.url}/l/after.html"}
    assert got[f"{site.url}/l/report.pdf"][:4] == ("The report", None, None, None)
    assert got[f"{site.url}/l/after.html"][0] == "After the broken one"
    rejects = db.execute("SELECT source, reason, raw->>'why', raw ? 'html' FROM rejects "
                         "ORDER BY source, id").fetchall()
    assert rejects == [("cards", "unusable_url", "'http://[::1' is not a usable link", True),
                       ("cards", "missing_url_and_title", None, True),
                       ("png", "unusable_document", None, False)]
    # Each card's rejection says which card and why (both showed "-", alike).
    table = " ".join(harvest("--sources", str(sources), "rejects", "--source", "cards",
                             home=home).stdout.split())
    assert "card 2: 'http://[::1' is not a usable link" in table, table
    assert "card 4: Sponsored: buy now" in table, table
    # Rejected, not "kept without fields" as the summary said.
    assert "fields dropped" not in result.stdout
    stats = db.execute("SELECT stats FROM crawl_runs WHERE 'cards' = ANY(sources)").fetchone()
    assert stats is not None and stats[0]["harvest/source/cards/article_not_html"] == 1
    assert any(ln.startswith("failed png:") and ln.endswith(
        "the listing page is binary data, not an HTML page") for ln in
        result.stdout.splitlines()), result.stdout


def test_listing_fields_resolve_links_and_prefer_hrefs() -> None:
    node = Selector(text='<base href="https://cdn.example/x/"><li><a href="../p?id=1">'
                         ' A <b>title</b> </a><a href="javascript:void(0)">js</a></li>')
    item = selectors.select(node, "li")[0]
    page = "https://example.org/list"
    assert listing_fields({"url": "a", "title": "a"}, item, "https://cdn.example/x/",
                          page) == {"url": "https://cdn.example/p?id=1", "title": "A title js"}
    assert listing_fields({"url": "a:nth-of-type(2)"}, item, "https://cdn.example/",
                          page) == {
        "dropped": {"url": "'javascript:void(0)' is not a usable link"}}
    # href="#" (a card whose script does the rest) is the listing page, no item's address.
    hashed = selectors.select(Selector(text='<li><a href="#">Open</a></li>'), "li")[0]
    assert listing_fields({"url": "a"}, hashed, page, page) == {
        "dropped": {"url": "'#' links to the listing page itself"}}
    assert selectors.is_xpath("(//a)[1]") and selectors.is_xpath("./a")
    assert not selectors.is_xpath("a > b::attr(href)")


def test_a_listing_that_is_not_html_says_so_and_is_kept(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Both were "item_selector matched nothing; the page may have changed its layout",
    # with nothing stored to show what came instead.
    (site.root / "empty.html").write_text("")
    (site.root / "api.json").write_text('{"items": []}')
    fields = {"title": "h2", "url": "a::attr(href)"}
    sources = write_sources(tmp_path / "s.toml", [
        pages_source("empty", f"{site.url}/empty.html", fields=fields),
        pages_source("json", f"{site.url}/api.json", fields=fields)])
    result = harvest("--sources", str(sources), "crawl", "empty", "json", home=home)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(ln.startswith("failed empty:") and ln.endswith("the listing page is empty")
               for ln in lines), result.stdout
    assert any(ln.startswith("failed json:") and "the listing page is JSON, not HTML "
               "(application/json" in ln for ln in lines), result.stdout
    rejects = sorted(db.execute("SELECT source, reason FROM rejects").fetchall())
    assert rejects == [("empty", "unusable_document"), ("json", "unusable_document")]
