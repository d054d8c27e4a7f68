"""The bundled demo site: rendering fills every placeholder, and LocalSite serves it."""

from __future__ import annotations

import json
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from harvester.demo import render_site
from harvester.services.localsite import LocalSite
from harvester.sources import load_sources

NOW = datetime(2025, 6, 3, 12, 0, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8765"
FEEDS = ("tech.xml", "security.atom", "research.json", "world-rdf.xml")
ATOM = "{http://www.w3.org/2005/Atom}"
RSS1 = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"


def feed_entries(path: Path) -> list[dict[str, object]]:
    """Each entry as {"link": str | None, "id": str | None, "dates": [datetime]}."""
    if path.suffix == ".json":
        return [
            {
                "link": item.get("url"),
                "id": item.get("id"),
                "dates": [
                    datetime.fromisoformat(item[key])
                    for key in ("date_published", "date_modified")
                    if key in item
                ],
            }
            for item in json.loads(path.read_text())["items"]
        ]
    root = ET.parse(path).getroot()
    if root.tag == "rss":
        return [
            {
                "link": item.findtext("link"),
                "id": item.findtext("guid"),
                "dates": [parsedate_to_datetime(item.findtext("pubDate") or "")],
            }
            for item in root.iter("item")
        ]
    if root.tag == f"{ATOM}feed":
        return [
            {
                "link": atom_link(entry),
                "id": entry.findtext(f"{ATOM}id"),
                "dates": [
                    datetime.fromisoformat(entry.findtext(f"{ATOM}{key}") or "")
                    for key in ("published", "updated")
                ],
            }
            for entry in root.iter(f"{ATOM}entry")
        ]
    assert root.tag == f"{RDF}RDF"
    return [
        {
            "link": item.findtext(f"{RSS1}link"),
            "id": item.get(f"{RDF}about"),
            "dates": [datetime.fromisoformat(item.findtext(f"{DC}date") or "")],
        }
        for item in root.iter(f"{RSS1}item")
    ]


def atom_link(entry: ET.Element) -> str | None:
    # Not `find(...) or ...`: an Element without children is falsy.
    link = entry.find(f"{ATOM}link")
    return None if link is None else link.get("href")


def without_tracking(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith(("utm_", "mtm_"))]
    query = [(k, v) for k, v in query if k != "fbclid"]
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


@pytest.fixture()
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    dest = tmp_path / "site"
    return dest, render_site(dest, BASE + "/", now=NOW)


def test_every_placeholder_is_filled(rendered: tuple[Path, Path]) -> None:
    dest, sources = rendered
    assert sources == dest / "sources.toml"
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert {f"feeds/{name}" for name in FEEDS} <= {p.relative_to(dest).as_posix() for p in files}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "{{" not in text, path
        assert "}}" not in text, path
    assert f'"{BASE}/feeds/tech.xml"' in sources.read_text()


@pytest.mark.parametrize("name", FEEDS)
def test_feed_dates_are_relative_to_now(rendered: tuple[Path, Path], name: str) -> None:
    entries = feed_entries(rendered[0] / "feeds" / name)
    assert 8 <= len(entries) <= 15
    for entry in entries:
        for date in entry["dates"]:  # type: ignore[union-attr]
            assert date.tzinfo is not None
            assert NOW - timedelta(days=7) <= date <= NOW


def test_date_formats_per_feed_type(rendered: tuple[Path, Path]) -> None:
    feeds = rendered[0] / "feeds"
    # The first RSS item is "{{ago:47m}}", written RFC 822 style.
    pub_date = ET.parse(feeds / "tech.xml").getroot().findtext("channel/item/pubDate")
    assert pub_date == "Tue, 03 Jun 2025 11:13:00 GMT"
    first = json.loads((feeds / "research.json").read_text())["items"][0]
    assert first["date_published"] == "2025-06-03T11:00:00Z"


def test_naive_now_is_taken_as_utc(tmp_path: Path) -> None:
    render_site(tmp_path, BASE, now=NOW.replace(tzinfo=None))
    item = json.loads((tmp_path / "feeds" / "research.json").read_text())["items"][0]
    assert item["date_published"] == "2025-06-03T11:00:00Z"


def test_each_feed_has_exactly_one_broken_entry(rendered: tuple[Path, Path]) -> None:
    for name in FEEDS:
        entries = feed_entries(rendered[0] / "feeds" / name)
        broken = [e for e in entries if not e["link"] and not e["id"]]
        assert len(broken) == 1, name


def test_some_stories_repeat_across_feeds_with_tracking_params(
    rendered: tuple[Path, Path],
) -> None:
    seen: dict[str, set[str]] = {}
    raw_links: set[str] = set()
    for name in FEEDS:
        for entry in feed_entries(rendered[0] / "feeds" / name):
            link = entry["link"]
            if isinstance(link, str) and link.startswith("http"):
                raw_links.add(link)
                seen.setdefault(without_tracking(link), set()).add(name)
    shared = [url for url, feeds in seen.items() if len(feeds) > 1]
    assert len(shared) >= 3
    assert any("utm_source=" in link for link in raw_links)


def test_rendered_sources_file_is_valid(rendered: tuple[Path, Path]) -> None:
    parsed = load_sources(rendered[1])
    assert {s.name for s in parsed.sources} == {
        "demo-tech",
        "demo-security",
        "demo-research",
        "demo-world",
    }
    assert "security" in parsed.topics


def test_rejects_a_base_url_that_would_need_escaping(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base URL"):
        render_site(tmp_path, 'http://x/"><script>')


def test_served_site_answers_every_listed_feed(tmp_path: Path) -> None:
    expected_types = {
        "tech.xml": "application/rss+xml",
        "security.atom": "application/atom+xml",
        "research.json": "application/feed+json",
        "world-rdf.xml": "application/rss+xml",
    }
    dest = tmp_path / "site"
    dest.mkdir()
    with LocalSite(dest) as site:
        # The base URL is only known once the server has a port, so render afterwards.
        sources = render_site(dest, site.url)
        data = tomllib.loads(sources.read_text(encoding="utf-8"))
        urls = [url for source in data["sources"] for url in source["urls"]]
        assert len(urls) == len(FEEDS)
        for url in urls:
            assert url.startswith(site.url)
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                name = url.rsplit("/", 1)[1]
                assert response.headers["Content-Type"] == expected_types[name]
                assert b"{{" not in response.read()
        for path in ("/robots.txt", "/articles/local-first-sync.html"):
            with urllib.request.urlopen(site.url + path, timeout=5) as response:
                assert response.status == 200
