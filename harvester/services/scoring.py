"""Relevance scoring, 0–100, with a breakdown an operator can read.

score = 100 × relevance × freshness × source_weight, capped at 100, where
  relevance = 1 − exp(−points / SATURATION): points = Σ topic.weight × (2 per keyword
              in the title, 1 per keyword only in the text), each keyword counted once;
  freshness = FLOOR + (1 − FLOOR) × 0.5 ^ (age / half_life): old items keep a floor so a
              strong old match still ranks above a fresh irrelevant one;
  source_weight from sources.toml.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harvester.sources import Topic

SATURATION = 4.0
FRESHNESS_FLOOR = 0.2


@dataclass(frozen=True, slots=True)
class _Keyword:
    """One keyword of one topic, found with ``str.find`` plus a word-boundary check on
    each hit: a regex with a look-behind scans every position and cost 8 µs per 2 KB."""

    topic: str
    label: str
    needle: str  # lower-cased, unless the keyword is an acronym matched as written
    exact_case: bool


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _occurs(haystack: str, needle: str) -> bool:
    """``needle`` in ``haystack`` as a whole word (no word character on either side)."""
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if (start == 0 or not _is_word_char(haystack[start - 1])) and (
            end == len(haystack) or not _is_word_char(haystack[end])
        ):
            return True
        start = haystack.find(needle, start + 1)
    return False


def _keyword(topic: str, raw: str) -> _Keyword:
    word = raw.strip()
    # All-caps acronyms ("AI", "CVE") are matched as written so "AI" is not "ai" in "said";
    # everything else ignores case. Word boundaries on both sides, always.
    exact = word.isupper() and len(word) <= 5
    needle = word if exact else word.lower()
    return _Keyword(topic, word.lower(), needle, exact)


class Scorer:
    """Scores items against the ``[topics.*]`` of the sources file."""

    def __init__(self, topics: Mapping[str, Topic], half_life_hours: float = 24.0) -> None:
        if half_life_hours <= 0:
            raise ValueError("the recency half-life must be positive")
        self._weights = {name: topic.weight for name, topic in topics.items()}
        self._keywords = [_keyword(name, k) for name, topic in topics.items()
                          for k in dict.fromkeys(topic.keywords)]
        self._half_life = half_life_hours

    def _matches(self, title: str, text: str) -> dict[str, tuple[set[str], set[str]]]:
        """Per topic: (keywords in the title, keywords only in the text)."""
        title_lower, text_lower = title.lower(), text.lower()
        both, both_lower = f"{title}\n{text}", f"{title_lower}\n{text_lower}"
        found: dict[str, tuple[set[str], set[str]]] = {}
        for kw in self._keywords:
            if kw.needle not in (both if kw.exact_case else both_lower):
                continue
            in_title = _occurs(title if kw.exact_case else title_lower, kw.needle)
            in_text = not in_title and _occurs(text if kw.exact_case else text_lower, kw.needle)
            if in_title or in_text:
                title_set, text_set = found.setdefault(kw.topic, (set(), set()))
                (title_set if in_title else text_set).add(kw.label)
        return found

    def score(
        self,
        *,
        title: str | None,
        text: str | None,
        published_at: datetime | None,
        source_weight: float,
        now: datetime,
    ) -> tuple[float, dict[str, Any]]:
        points = 0.0
        matched: dict[str, dict[str, Any]] = {}
        for topic, (in_title, in_text) in self._matches(title or "", text or "").items():
            topic_points = self._weights[topic] * (2 * len(in_title) + len(in_text))
            points += topic_points
            matched[topic] = {
                "keywords": sorted(in_title | in_text),
                "points": round(topic_points, 3),
            }
        relevance = 1.0 - math.exp(-points / SATURATION)
        age_hours = None
        freshness = FRESHNESS_FLOOR
        if published_at is not None:
            age_hours = max(0.0, (now - published_at).total_seconds() / 3600.0)
            decay = 0.5 ** (age_hours / self._half_life)
            freshness = FRESHNESS_FLOOR + (1.0 - FRESHNESS_FLOOR) * decay
        value = min(100.0, 100.0 * relevance * freshness * source_weight)
        breakdown = {
            "topics": matched,
            "points": round(points, 3),
            "relevance": round(relevance, 4),
            "age_hours": None if age_hours is None else round(age_hours, 2),
            "half_life_hours": self._half_life,
            "freshness": round(freshness, 4),
            "source_weight": source_weight,
            "score": round(value, 2),
        }
        return round(value, 2), breakdown
