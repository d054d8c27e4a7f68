"""The weekly brief and one-line-per-cluster listings, on a real PostgreSQL; the HTML brief
as headless Chromium shows it (screenshot in tests/artifacts/)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from harvester.services import brief as briefs
from harvester.services.clustered import top_clusters
from harvester.services.queries import TopFilter
from harvester.spiders.rendered import DEFAULT_CHROMIUM
from tests.conftest import ROOT, harvest

WEEK = briefs.IsoWeek(2026, 47)  # Monday 16 – Sunday 22 November 2026
MONDAY = datetime(2026, 11, 16, tzinfo=UTC)
ARTIFACTS = ROOT / "tests" / "artifacts"
EVIL = '<script>alert("pwned")</script> & "quotes"'


def add(db: psycopg.Connection[Any], title: str, source: str, *, score: float = 0.0,
        topics: dict[str, list[str]] | None = None, cluster: int | None = None,
        published: datetime | None = MONDAY + timedelta(days=1),
        first_seen: datetime | None = None, url: str | None = None) -> int:
    """Insert a signal as the store pipeline leaves it; return its id."""
    breakdown = {"topics": {name: {"keywords": words, "points": float(len(words))}
                            for name, words in (topics or {}).items()}, "score": score}
    row = db.execute("""
        INSERT INTO signals (key, source, kind, url, title, published_at, fetched_at,
                             first_seen, cluster_id, score, score_breakdown)
        VALUES (%s, %s, 'feed', %s, %s, %s, now(), coalesce(%s, now()), %s, %s, %s)
        RETURNING id""", (
        uuid.uuid4().hex, source, url or f"https://{source}.example/{uuid.uuid4().hex[:8]}",
        title, published, first_seen, cluster, score, Jsonb(breakdown))).fetchone()
    assert row is not None
    return int(row[0])


def story(db: psycopg.Connection[Any], title: str, copies: list[tuple[str, float]],
          topics: dict[str, list[str]] | None = None, **kw: Any) -> list[int]:
    """One story carried by several sources: the first signal starts the cluster (its own
    ``cluster_id`` stays NULL, as for a signal nobody matched yet), the rest join it."""
    first = add(db, title, copies[0][0], score=copies[0][1], topics=topics, **kw)
    rest = [add(db, f"{title} (copy {i})", source, score=score, topics=topics, cluster=first,
                **kw) for i, (source, score) in enumerate(copies[1:], 1)]
    return [first, *rest]


def entries(brief: briefs.Brief) -> dict[str | None, list[briefs.Entry]]:
    return {section.topic: section.entries for section in brief.sections}


# -- selection and ranking -----------------------------------------------------------------


def test_a_cluster_is_one_entry_listing_every_source_once(db: psycopg.Connection[Any]) -> None:
    ids = story(db, "Ransomware hits hospitals", [("krebs", 40.0), ("hn", 72.5),
                                                   ("reddit", 55.0), ("hn", 30.0)],
                topics={"security": ["ransomware"]})
    add(db, "Unrelated patch notes", "krebs", score=20.0, topics={"security": ["patch"]})

    brief = briefs.build(db, WEEK)

    security = entries(brief)["security"]
    assert [e.title for e in security] == ["Ransomware hits hospitals (copy 1)",
                                           "Unrelated patch notes"]
    top = security[0]
    assert top.score == 72.5  # the best signal's score
    assert top.sources == ["hn", "krebs", "reddit"]
    assert top.size == 4
    # One link per source: hn's best copy (72.5), not its 30-point duplicate.
    hn = next(link for link in top.links if link.source == "hn")
    assert hn.signal_id == ids[1]
    assert top.why() == "It matched security (ransomware); 3 sources carried it."
    md = brief.markdown()
    assert md.count("Ransomware hits hospitals") == 1
    assert "Sources: [hn](<https://hn.example/" in md
    assert brief.signal_ids == sorted([*ids[:3], security[1].links[0].signal_id])


def test_sections_per_topic_with_other_last_and_a_limit_per_topic(
    db: psycopg.Connection[Any],
) -> None:
    story(db, "Model weights leak", [("hn", 80.0), ("x", 60.0)],
          topics={"ai": ["weights"], "security": ["leak"]})
    for i, score in enumerate((50.0, 40.0, 30.0)):
        add(db, f"AI story {i}", "feed", score=score, topics={"ai": ["AI"]})
    add(db, "Cat pictures", "reddit")
    story(db, "Stadium opens", [("news", 0.0), ("local", 0.0)])

    brief = briefs.build(db, WEEK, limit=3)

    by_topic = entries(brief)
    assert list(by_topic) == ["ai", "security", None]
    assert [e.title for e in by_topic["ai"]] == ["Model weights leak", "AI story 0",
                                                 "AI story 1"]
    assert [e.title for e in by_topic["security"]] == ["Model weights leak"]
    # Unmatched stories: the one more sources carried ranks first; on a tied score the
    # newest signal (here the later copy) stands for its cluster, as in `harvest top`.
    assert [e.title for e in by_topic[None]] == ["Stadium opens (copy 1)", "Cat pictures"]
    assert by_topic["ai"][0].topics == {"ai": ["weights"], "security": ["leak"]}
    assert by_topic["ai"][0].why() == ("It matched ai (weights) and security (leak); "
                                       "2 sources carried it.")
    assert brief.story_count == 5
    md = brief.markdown()
    assert md.index("## ai") < md.index("## security") < md.index("## Other")


def test_only_signals_dated_in_the_iso_week_utc(db: psycopg.Connection[Any]) -> None:
    add(db, "Monday midnight", "a", published=MONDAY)
    add(db, "Sunday night", "a", published=MONDAY + timedelta(days=7, microseconds=-1))
    add(db, "Next Monday", "a", published=MONDAY + timedelta(days=7))
    add(db, "Previous Sunday", "a", published=MONDAY - timedelta(seconds=1))
    add(db, "No date, first seen Wednesday", "a", published=None,
        first_seen=MONDAY + timedelta(days=2))
    add(db, "Dated last week, seen this week", "a", published=MONDAY - timedelta(days=1),
        first_seen=MONDAY + timedelta(days=1))

    titles = {e.title for e in entries(briefs.build(db, WEEK, limit=10))[None]}

    assert titles == {"Monday midnight", "Sunday night", "No date, first seen Wednesday"}


def test_an_empty_week_still_makes_a_brief(db: psycopg.Connection[Any]) -> None:
    brief = briefs.generate(db, WEEK)
    assert brief.sections == []
    assert "No signals are dated in this week" in brief.markdown()
    assert briefs.stored(db, WEEK) is not None


@pytest.mark.parametrize(("value", "message"), [
    ("2026-47", "'2026-47' is not an ISO week; write it like 2026-W47"),
    ("2026-W00", "'2026-W00' is not an ISO week: 2026 has weeks 01 to 53"),
    ("2025-W53", "'2025-W53' is not an ISO week: 2025 has weeks 01 to 52"),
    ("last week", "'last week' is not an ISO week; write it like 2026-W47"),
    # Raised "year 0 is out of range": a 500 from the API, a traceback from the CLI.
    ("0000-W01", "'0000-W01' is not an ISO week: the year must be 1 to 9998"),
    ("9999-W52", "'9999-W52' is not an ISO week: the year must be 1 to 9998"),
    ("２０２６-W47", "'２０２６-W47' is not an ISO week; write it like 2026-W47"),
])
def test_week_parsing_rejects_what_is_no_iso_week(value: str, message: str) -> None:
    with pytest.raises(briefs.WeekError) as info:
        briefs.IsoWeek.parse(value)
    assert str(info.value) == message


def test_week_bounds() -> None:
    assert str(briefs.IsoWeek.parse("2026-w1")) == "2026-W01"
    assert str(briefs.IsoWeek.parse("0001-W01")) == "0001-W01"  # not "1-W01"
    week = briefs.IsoWeek.parse("2026-W53")
    assert (week.start, week.end) == (datetime(2026, 12, 28, tzinfo=UTC),
                                      datetime(2027, 1, 4, tzinfo=UTC))
    assert briefs.IsoWeek.of(datetime(2027, 1, 3, 23, 59, tzinfo=UTC)) == week


# -- harvest top, one line per cluster -----------------------------------------------------


def test_top_clusters_collapses_duplicates(db: psycopg.Connection[Any]) -> None:
    story(db, "Big outage", [("news", 60.0), ("hn", 90.0), ("reddit", 70.0), ("hn", 85.0)])
    story(db, "Small fix", [("blog", 50.0)])
    story(db, "Chip export rules", [("x", 40.0), ("news", 45.0)])

    rows = top_clusters(db, TopFilter(limit=2))

    assert [(r["title"], r["source"], r["score"]) for r in rows] == [
        ("Big outage (copy 1)", "hn", 90.0), ("Small fix", "blog", 50.0)]
    assert rows[0]["cluster_sources"] == ["hn", "news", "reddit"]
    assert (rows[0]["cluster_size"], rows[0]["duplicates"]) == (4, 3)
    assert (rows[1]["cluster_sources"], rows[1]["cluster_size"]) == (["blog"], 1)
    assert {"url", "title", "source", "score", "published_at"} <= set(rows[0])

    # A filter picks clusters; the sources still describe the whole story.
    news = top_clusters(db, TopFilter(limit=10, sources=("news",)))
    assert [(r["title"], r["cluster_sources"]) for r in news] == [
        ("Big outage", ["news", "hn", "reddit"]),
        ("Chip export rules (copy 1)", ["news", "x"])]
    assert [r["title"] for r in top_clusters(db, TopFilter(limit=10, min_score=48))] == [
        "Big outage (copy 1)", "Small fix"]


# -- the command ---------------------------------------------------------------------------


def test_brief_command_prints_markdown_and_regenerating_replaces_the_week(
    db: psycopg.Connection[Any], home: Path,
) -> None:
    add(db, "First story", "krebs", score=30.0, topics={"security": ["CVE"]})

    first = harvest("brief", "--week", "2026-W47", home=home)

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("# Weekly brief 2026-W47\n\n16–22 November 2026 (UTC)")
    assert "1. **[First story](<https://krebs.example/" in first.stdout
    add(db, "Second story", "hn", score=60.0, topics={"security": ["zero-day"]})

    again = harvest("brief", "--week", "2026-W47", "--limit", "1", home=home)

    assert again.returncode == 0, again.stderr
    assert "Second story" in again.stdout and "First story" not in again.stdout
    rows = db.execute("SELECT week, markdown, params FROM briefs").fetchall()
    assert len(rows) == 1
    week, markdown, params = rows[0]
    assert (week, markdown) == ("2026-W47", again.stdout)
    assert params["limit"] == 1
    # "--output -" wrote a file named "-" in the current directory.
    dashed = harvest("brief", "--week", "2026-W47", "--limit", "1", "--output", "-",
                     home=home, cwd=home)
    assert dashed.returncode == 0 and dashed.stdout == again.stdout
    assert not (home / "-").exists()

    # A brief that cannot be written leaves the stored one as it was.
    unwritten = harvest("brief", "--week", "2026-W47", "--limit", "5", "--output",
                        str(home / "no-such-dir" / "brief.md"), home=home)
    assert unwritten.returncode == 2
    assert "cannot write" in unwritten.stderr and "choose another --output" in unwritten.stderr
    assert db.execute("SELECT markdown, params->>'limit' FROM briefs").fetchall() == [
        (again.stdout, "1")]


@pytest.mark.parametrize(("value", "sentence"), [
    ("2026-47", "error: --week '2026-47' is not an ISO week; write it like 2026-W47."),
    ("2025-W53", "error: --week '2025-W53' is not an ISO week: 2025 has weeks 01 to 52."),
])
def test_brief_command_bad_week_is_one_sentence(value: str, sentence: str, home: Path) -> None:
    result = harvest("brief", "--week", value, home=home)
    assert result.returncode == 2
    assert result.stderr.strip() == sentence
    assert result.stdout == ""


def test_brief_command_refuses_a_week_that_has_not_started(home: Path) -> None:
    result = harvest("brief", "--week", "2999-W01", home=home)
    assert result.returncode == 2
    assert "--week 2999-W01 has not started yet" in result.stderr
    assert "Traceback" not in result.stderr


# -- the HTML page -------------------------------------------------------------------------


def test_html_escapes_titles_and_drops_non_web_links(db: psycopg.Connection[Any]) -> None:
    add(db, EVIL, "x", score=10.0, url="javascript:alert(1)")
    page = briefs.build(db, WEEK).html()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "javascript:" not in page
    assert "http://" not in page.replace("https://", "") and "src=" not in page


def test_topics_are_sorted_alphabetically_with_an_anchor_each(
        db: psycopg.Connection[Any]) -> None:
    # "c++" and "c#" shared the anchor "topic-c-" (the menu's link went to the first), and
    # "Zeta" came before "alpha" (byte order).
    for topic in ("c++", "c#", "Zeta", "alpha"):
        add(db, f"About {topic}", "feed", score=10.0, topics={topic: ["x"]})
    page = briefs.build(db, WEEK).html()
    ids = re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', page)
    assert [title for _, title in ids] == ["alpha", "c#", "c++", "Zeta"]
    anchors = [anchor for anchor, _ in ids]
    assert len(set(anchors)) == 4
    assert re.findall(r'<nav>(.*?)</nav>', page)[0].count('href="#') == 4
    for anchor in anchors:
        assert f'href="#{anchor}"' in page


def _png_rows(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct scanlines) of a PNG: a blank page has a handful."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    return width, height, len({raw[i:i + stride] for i in range(0, len(raw), stride)})


@pytest.mark.skipif(shutil.which(DEFAULT_CHROMIUM) is None,
                    reason="needs Chromium (apt-get install -y chromium)")
def test_html_brief_reads_as_a_standalone_page_in_chromium(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    story(db, "Ransomware gang leaks hospital records", [("krebs", 81.0), ("hn", 64.0),
                                                          ("reddit", 52.0)],
          topics={"security": ["ransomware", "leak"]})
    story(db, "Open model beats benchmark", [("hn", 70.0), ("x", 66.0)],
          topics={"ai": ["model"]})
    add(db, EVIL, "x", score=12.0, topics={"ai": ["AI"]})
    add(db, "A" * 140 + " unbroken headline", "news", score=0.0)
    out = tmp_path / "brief.html"

    made = harvest("brief", "--week", str(WEEK), "--format", "html", "--output", str(out),
                   home=home)

    assert made.returncode == 0, made.stderr
    assert f"written to {out}" in made.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"brief-{WEEK}.png"
    shot.unlink(missing_ok=True)
    requests: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(out.as_uri(), wait_until="load")
            text = page.inner_text("body")
            headings = page.locator("h2").all_inner_texts()
            light_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.screenshot(path=str(shot), full_page=True)

            phone = browser.new_page(viewport={"width": 360, "height": 740})
            phone.goto(out.as_uri(), wait_until="load")
            overflow = phone.evaluate("document.documentElement.scrollWidth - innerWidth")
            phone.emulate_media(color_scheme="dark")
            dark_bg = phone.evaluate("getComputedStyle(document.body).backgroundColor")
        finally:
            browser.close()

    assert page_title(out) == "Weekly brief 2026-W47"
    assert text.startswith("Weekly brief 2026-W47\n")
    assert headings == ["ai", "security", "Other"]
    for expected in ("Ransomware gang leaks hospital records", "Open model beats benchmark",
                     EVIL, "Sources: hn, krebs, reddit", "Sources: hn, x", "score 81.0",
                     "Why: It matched security (leak, ransomware); 3 sources carried it."):
        assert expected in text, expected
    assert dialogs == []  # the <script> title is text, not code
    assert [url for url in requests if not url.startswith("file:")] == []  # self-contained
    assert overflow <= 0  # nothing wider than a phone screen
    assert light_bg != dark_bg and _luminance(dark_bg) < 60 < _luminance(light_bg)
    width, height, rows = _png_rows(shot)
    assert width == 1000 and shot.stat().st_size > 20_000
    assert height >= 700 and rows > 150, f"the screenshot looks blank ({rows} distinct rows)"


def page_title(path: Path) -> str:
    html = path.read_text(encoding="utf-8")
    return html.split("<title>", 1)[1].split("</title>", 1)[0]


def _luminance(css_rgb: str) -> float:
    """Mean of the channels of ``rgb(r, g, b)``."""
    values = json.loads("[" + css_rgb[css_rgb.index("(") + 1:css_rgb.index(")")] + "]")
    return sum(values[:3]) / 3
