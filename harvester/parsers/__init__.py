"""Document parsers: pure functions from fetched bytes to plain data (no Scrapy)."""

from __future__ import annotations

from harvester.parsers.feed import EntryReject, ParsedFeed, parse_feed

__all__ = ["EntryReject", "ParsedFeed", "parse_feed"]
