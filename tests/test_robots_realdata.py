"""Scrapy's robots.txt parser (``ProtegoRobotParser``, what ``ROBOTSTXT_OBEY`` uses) against
the answers recorded for the shared robots.txt examples
(``../shared/realdata/robots/index.json``); skipped when the corpus is not there.

The expected answers were derived with Protego 0.7.0; Scrapy 2.19 runs Protego 0.7.0 too,
so anything short of full agreement means Scrapy's own decoding (``utf-8-sig``, errors
ignored) changed what Protego sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scrapy.robotstxt import ProtegoRobotParser

from harvester.parsers.sitemap import robots_sitemaps
from tests.realdata import REALDATA

ROBOTS: Path = REALDATA / "robots"
pytestmark = pytest.mark.skipif(not (ROBOTS / "index.json").is_file(),
                                reason=f"corpus not found at {ROBOTS}")
BASE = "http://example.com"
#: Measured: 350/350 allow/deny answers and 25/25 crawl delays and sitemap lists agree. The
#: floor is exact: both sides run the same Protego release, so any difference is a change in
#: how Scrapy hands robots.txt to it, which the crawl must not absorb silently.
AGREEMENT_FLOOR = 1.0


def _entries() -> list[dict[str, Any]]:
    return json.loads((ROBOTS / "index.json").read_text(encoding="utf-8"))


def _parser(entry: dict[str, Any]) -> ProtegoRobotParser:
    return ProtegoRobotParser((ROBOTS / entry["file"]).read_bytes(), None)


def test_allow_and_deny_answers_agree() -> None:
    entries = _entries()
    assert len(entries) >= 20, "robots files went missing from the corpus"
    agreed = compared = 0
    misses: list[str] = []
    for entry in entries:
        parser = _parser(entry)
        expected = entry["derived_protego_0_7_0"]
        for key, agent in (("can_fetch_*", "*"), ("can_fetch_Googlebot", "Googlebot")):
            for path, allowed in expected[key].items():
                compared += 1
                if parser.allowed(BASE + path, agent) is allowed:
                    agreed += 1
                else:
                    misses.append(f"  {entry['file']} {agent} {path}: expected {allowed}")
    rate = agreed / compared
    print(f"\nrobots.txt allow/deny agreement: {agreed}/{compared} = {rate:.1%}")
    print("\n".join(misses))
    assert rate >= AGREEMENT_FLOOR


def test_crawl_delay_and_sitemaps_agree() -> None:
    entries = _entries()
    agreed = 0
    for entry in entries:
        parser = _parser(entry)
        expected = entry["derived_protego_0_7_0"]
        same = (parser.crawl_delay("*") == expected["crawl_delay_*"]
                and list(parser.rp.sitemaps) == expected["sitemaps"])
        agreed += same
        # The sitemap spider reads the same lines, resolved and without repeats.
        body = (ROBOTS / entry["file"]).read_bytes()
        resolved = list(dict.fromkeys(f"{BASE}{u}" if u.startswith("/") else u
                                      for u in expected["sitemaps"]))
        assert robots_sitemaps(body, BASE + "/robots.txt") == resolved, entry["file"]
    print(f"\ncrawl-delay + sitemaps agreement: {agreed}/{len(entries)}")
    assert agreed / len(entries) >= AGREEMENT_FLOOR
