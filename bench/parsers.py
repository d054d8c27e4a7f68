"""Feed parser benchmark: fastfeedparser vs feedparser vs our parse_feed.

    .venv/bin/python bench/parsers.py [--rounds N]

Times each parser over every document of the shared real-world corpus
(``../shared/realdata/feeds``, read-only) and over a synthetic hot-path feed (100
entries with 1–3 KB HTML each, the shape of the production crawl), best of N rounds,
and reports entries/s plus (title, link) agreement with the reference outputs for each
parser used alone. Also compares the two HTML→text candidates. Figures go to
``docs/parsers.md`` by hand.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fastfeedparser  # noqa: E402
import feedparser  # noqa: E402
from w3lib.html import remove_tags, replace_entities  # noqa: E402

from harvester.parsers.feed import parse_feed  # noqa: E402
from harvester.parsers.html import html_to_text  # noqa: E402
from tests.realdata import REALDATA, Pair, all_feed_files, count_matches, feed_cases  # noqa: E402

Runner = Callable[[bytes, str], list[Pair]]
_WS = re.compile(r"\s+")


def run_fastfeedparser(body: bytes, url: str) -> list[Pair]:
    """fastfeedparser alone, as a caller would use it (raw bytes in)."""
    try:
        result = fastfeedparser.parse(body)
    except Exception:  # a failure is a data point, not a crash
        return []
    return [(e.get("title"), e.get("link")) for e in result.entries]


def run_feedparser(body: bytes, url: str) -> list[Pair]:
    """feedparser alone with its defaults (sanitising on), told the document's URL."""
    result = feedparser.parse(body, response_headers={"content-location": url})
    return [(e.get("title"), e.get("link")) for e in result.entries]


def run_feedparser_lean(body: bytes, url: str) -> list[Pair]:
    """feedparser as parse_feed calls it: no HTML sanitising, no content URI rewriting."""
    result = feedparser.parse(
        body,
        response_headers={"content-location": url},
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    return [(e.get("title"), e.get("link")) for e in result.entries]


def run_parse_feed(body: bytes, url: str) -> list[Pair]:
    """Our parse_feed: charset decision, fallbacks, normalisation."""
    return [(e["title"], e["url"]) for e in parse_feed(body, url).entries]


RUNNERS: dict[str, Runner] = {
    "fastfeedparser": run_fastfeedparser,
    "feedparser": run_feedparser,
    "feedparser-lean": run_feedparser_lean,
    "parse_feed": run_parse_feed,
}


def best_time(runner: Runner, docs: list[tuple[bytes, str]], rounds: int) -> tuple[float, int]:
    """Best wall time over ``rounds`` passes of all docs, and the entries of one pass."""
    best = float("inf")
    entries = 0
    for _ in range(rounds):
        start = time.perf_counter()
        entries = sum(len(runner(body, url)) for body, url in docs)
        best = min(best, time.perf_counter() - start)
    return best, entries


def agreement(runner: Runner) -> tuple[int, int]:
    matched = compared = 0
    for case in feed_cases():
        m, c = count_matches(case.expected, runner(case.path.read_bytes(), _url(case.path)))
        matched += m
        compared += c
    return matched, compared


def _url(path: Path) -> str:
    return "https://feeds.example/" + str(path.relative_to(REALDATA / "feeds"))


def synthetic_feed(entries: int = 100) -> bytes:
    """RSS 2.0 shaped like the production hot path: 1–3 KB of HTML per entry."""
    paragraph = (
        "<p>The <a href='/x'>committee</a> met on <b>Tuesday</b> &amp; agreed the budget "
        "for the next two years, with amendments from &ldquo;both sides&rdquo;.</p>"
    )
    items = []
    for i in range(entries):
        body = paragraph * (8 + i % 16) + "<script>track()</script><ul><li>one</li></ul>"
        items.append(
            f"<item><title>Story {i} &amp; more</title><link>https://news.example/{i}</link>"
            f"<guid>https://news.example/{i}</guid><pubDate>Mon, 06 Jan 2025 10:{i % 60:02d}:00"
            f" +0100</pubDate><category>Politics</category><category>Budget</category>"
            f"<description><![CDATA[{body}]]></description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Hot</title>'
        "<link>https://news.example/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def w3lib_text(markup: str) -> str:
    return _WS.sub(" ", replace_entities(remove_tags(markup))).strip()


def bench_html(rounds: int) -> list[tuple[str, float, int]]:
    """HTML→text over every entry text the corpus holds."""
    texts: list[str] = []
    for path in all_feed_files():
        try:
            result = fastfeedparser.parse(path.read_bytes())
        except Exception:  # only the texts matter here
            continue
        for entry in result.entries:
            for part in entry.get("content") or []:
                texts.append(part.get("value") or "")
            texts.append(entry.get("description") or "")
    texts = [t for t in texts if t]
    size = sum(len(t) for t in texts)
    rows = []
    for name, fn in (("lxml html_to_text", html_to_text), ("w3lib remove_tags", w3lib_text),
                     ("html.unescape only", html.unescape)):
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for text in texts:
                fn(text)
            best = min(best, time.perf_counter() - start)
        rows.append((name, best, len(texts)))
    print(f"\nHTML→text over {len(texts)} corpus texts ({size / 1e6:.1f} MB chars):")
    for name, best, n in rows:
        print(f"  {name:20} {best * 1000:8.1f} ms  {n / best:10.0f} texts/s")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--rounds", type=int, default=5)
    opts = args.parse_args(argv)
    if not (REALDATA / "feeds").is_dir():
        print(f"corpus not found at {REALDATA}/feeds", file=sys.stderr)
        return 1
    docs = [(p.read_bytes(), _url(p)) for p in all_feed_files()]
    hot = [(synthetic_feed(), "https://news.example/feed")]
    size = sum(len(b) for b, _ in docs)
    print(f"corpus: {len(docs)} documents, {size / 1e6:.1f} MB; best of {opts.rounds} rounds")
    print(f"{'parser':15} {'corpus s':>9} {'entries':>8} {'entries/s':>10} "
          f"{'hot-feed ms':>12} {'agreement':>16}")
    results: dict[str, Any] = {}
    for name, runner in RUNNERS.items():
        seconds, entries = best_time(runner, docs, opts.rounds)
        hot_seconds, _ = best_time(runner, hot, opts.rounds)
        matched, compared = agreement(runner)
        results[name] = seconds
        print(f"{name:15} {seconds:9.3f} {entries:8d} {entries / seconds:10.0f} "
              f"{hot_seconds * 1000:12.1f} {matched:5d}/{compared:<4d} {matched / compared:6.2%}")
    for slow in ("feedparser", "feedparser-lean"):
        print(f"{slow} / fastfeedparser time: {results[slow] / results['fastfeedparser']:.1f}x")
    bench_html(opts.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
