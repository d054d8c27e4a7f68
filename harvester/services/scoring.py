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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harvester.sources import Topic

SATURATION = 4.0
FRESHNESS_FLOOR = 0.2


@dataclass(frozen=True, slots=True)
class _CompiledTopic:
    name: str
    weight: float
    pattern: re.Pattern[str]


def _compile(name: str, topic: Topic) -> _CompiledTopic:
    alternatives = sorted({re.escape(k.strip()) for k in topic.keywords}, key=len, reverse=True)
    # Word boundaries so "AI" does not match "said"; case-insensitive except for
    # all-caps acronyms, which are matched as written.
    parts = [a if a.isupper() and len(a) <= 5 else f"(?i:{a})" for a in alternatives]
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")
    return _CompiledTopic(name, topic.weight, pattern)


class Scorer:
    """Scores items against the ``[topics.*]`` of the sources file."""

    def __init__(self, topics: Mapping[str, Topic], half_life_hours: float = 24.0) -> None:
        if half_life_hours <= 0:
            raise ValueError("the recency half-life must be positive")
        self._topics = [_compile(name, topic) for name, topic in topics.items()]
        self._half_life = half_life_hours

    def score(
        self,
        *,
        title: str | None,
        text: str | None,
        published_at: datetime | None,
        source_weight: float,
        now: datetime,
    ) -> tuple[float, dict[str, Any]]:
        title = title or ""
        text = text or ""
        points = 0.0
        matched: dict[str, dict[str, Any]] = {}
        for topic in self._topics:
            in_title = {m.group(0).lower() for m in topic.pattern.finditer(title)}
            in_text = {m.group(0).lower() for m in topic.pattern.finditer(text)} - in_title
            if not in_title and not in_text:
                continue
            topic_points = topic.weight * (2 * len(in_title) + len(in_text))
            points += topic_points
            matched[topic.name] = {
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
