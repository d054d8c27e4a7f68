"""Relevance scoring, 0–100, with a breakdown an operator can read (docs/scoring.md).

score = min(100, base × corroboration), base = 100 × relevance × engagement × freshness ×
source_weight, where
  relevance    = 1 − exp(−points / SATURATION): points = Σ topic.weight × Σ term.weight ×
                 (2 in the title, 1 only in the text), each term counted once; a topic whose
                 ``negative`` terms occur in the item scores nothing, a topic limited to
                 ``sources`` scores nothing elsewhere;
  engagement   = 1 + ENGAGEMENT_SPREAD × (percentile − ½) against the source's recent
                 signals (services/engagement.py); 1 when there is no percentile;
  freshness    = FLOOR + (1 − FLOOR) × 0.5 ^ (age / half_life): old items keep a floor so a
                 strong old match still ranks above a fresh irrelevant one;
  source_weight from sources.toml;
  corroboration = 1 + CORROBORATION_STEP × min(distinct sources in the cluster − 1,
                 CORROBORATION_MAX_EXTRA), applied in SQL when clusters change
                 (services/rescore.py), from ``base`` kept in the breakdown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from harvester.services.engagement import LABELS, NEUTRAL, Engagement

if TYPE_CHECKING:  # the store worker imports scoring without pydantic
    from harvester.sources import Topic

SCORING_VERSION = 2
DEFAULT_HALF_LIFE_HOURS = 24.0
#: A century: no decay worth the name, and still a number.
HALF_LIFE_MAX = 876_000.0
SATURATION = 4.0
TITLE_FACTOR = 2
FRESHNESS_FLOOR = 0.2
ENGAGEMENT_SPREAD = 0.5  # factor 0.75 (least engaged) … 1.25 (most engaged)
CORROBORATION_STEP = 0.15  # +15 % per further distinct source …
CORROBORATION_MAX_EXTRA = 4  # … up to +60 %


def engagement_factor(percentile: float | None) -> float:
    if percentile is None:
        return 1.0
    return round(1.0 + ENGAGEMENT_SPREAD * (percentile - 0.5), 4)


def corroboration_factor(distinct_sources: int) -> float:
    extra = min(max(distinct_sources - 1, 0), CORROBORATION_MAX_EXTRA)
    return round(1.0 + CORROBORATION_STEP * extra, 4)


def final_score(base: float, corroboration: float) -> float:
    return round(min(100.0, max(0.0, base * corroboration)), 2)


@dataclass(frozen=True, slots=True)
class _Term:
    """One keyword, phrase or negative term of one topic, found with ``str.find`` plus a
    word-boundary check on each hit: a regex with a look-behind scans every position and
    cost 8 µs per 2 KB."""

    topic: str
    label: str
    needle: str  # lower-cased, unless the term is an acronym matched as written
    exact_case: bool
    weight: float
    #: the term starts / ends in a script written without spaces (see ``_spaceless``)
    open_start: bool = False
    open_end: bool = False


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


# Scripts written without spaces between words: Thai and Lao, Myanmar, Khmer, kana, CJK
# ideographs (and their compatibility and supplementary planes), half-width katakana.
_SPACELESS = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF),
              (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
              (0xFF66, 0xFF9F), (0x20000, 0x3FFFF))


def _spaceless(char: str) -> bool:
    """Whether ``char`` belongs to a script without spaces: a term there is found inside
    longer runs of letters (地震 in 東京で地震、…), which a word boundary would refuse."""
    code = ord(char)
    return code >= 0x0E00 and any(low <= code <= high for low, high in _SPACELESS)


def _occurs(haystack: str, needle: str, open_start: bool = False,
            open_end: bool = False) -> bool:
    """``needle`` in ``haystack`` as a whole word (no word character on either side; a
    side in a spaceless script needs none)."""
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if (open_start or start == 0 or not _is_word_char(haystack[start - 1])) and (
            open_end or end == len(haystack) or not _is_word_char(haystack[end])
        ):
            return True
        start = haystack.find(needle, start + 1)
    return False


def _term(topic: str, raw: str, weight: float = 1.0) -> _Term:
    word = raw.strip()
    # All-caps acronyms ("AI", "CVE") are matched as written so "AI" is not "ai" in "said";
    # everything else ignores case. Word boundaries on both sides, except where the term
    # is in a script without spaces.
    exact = word.isupper() and len(word) <= 5
    return _Term(topic, word.lower(), word if exact else word.lower(), exact, weight,
                 bool(word) and _spaceless(word[0]), bool(word) and _spaceless(word[-1]))


def _where(term: _Term, texts: tuple[str, str, str, str]) -> str | None:
    """"title", "text" or None: where ``term`` occurs (the title wins). ``texts`` is
    (title, text, and the same lower-cased), made once per item."""
    title, text, title_lower, text_lower = texts
    in_title, in_text = (title, text) if term.exact_case else (title_lower, text_lower)
    needle, left, right = term.needle, term.open_start, term.open_end
    if needle in in_title and _occurs(in_title, needle, left, right):
        return "title"
    return "text" if needle in in_text and _occurs(in_text, needle, left, right) else None


class Scorer:
    """Scores items against the ``[topics.*]`` of the sources file."""

    def __init__(self, topics: Mapping[str, Topic],
                 half_life_hours: float = DEFAULT_HALF_LIFE_HOURS) -> None:
        if not 0 < half_life_hours < float("inf"):  # NaN too
            raise ValueError("the recency half-life must be positive")
        self._topics = dict(topics)
        # A topic lists each term once, whatever its case (refused with the file).
        self._terms = [_term(name, term, weight) for name, topic in topics.items()
                       for term, weight in topic.terms()]
        self._negative = {name: [_term(name, t) for t in dict.fromkeys(topic.negative)]
                          for name, topic in topics.items() if topic.negative}
        self._phrases = any(" " in t.needle for t in self._terms) or any(
            " " in t.needle for terms in self._negative.values() for t in terms)
        self._per_source: dict[str | None, list[_Term]] = {}
        self._half_life = half_life_hours

    def _terms_for(self, source: str | None) -> list[_Term]:
        """The terms of the topics that apply to ``source`` (cached per source)."""
        terms = self._per_source.get(source)
        if terms is None:
            allowed = {name for name, topic in self._topics.items()
                       if topic.sources is None or source in topic.sources}
            terms = self._per_source[source] = [t for t in self._terms if t.topic in allowed]
        return terms

    def _relevance(self, title: str, text: str, source: str | None
                   ) -> tuple[float, dict[str, Any], dict[str, list[str]]]:
        if self._phrases and "\n" in text:
            # A line break is a space to a phrase: a hard-wrapped paragraph ("a supply\nchain
            # attack") missed "supply chain attack".
            text = text.replace("\n", " ")
        title_lower, text_lower = title.lower(), text.lower()
        texts = (title, text, title_lower, text_lower)
        found: dict[str, list[tuple[_Term, str]]] = {}
        for term in self._terms_for(source):
            # The substring tests inlined: most terms are in most items nowhere at all.
            needle = term.needle
            if (needle in title or needle in text) if term.exact_case else (
                    needle in title_lower or needle in text_lower):
                where = _where(term, texts)
                if where is not None:
                    found.setdefault(term.topic, []).append((term, where))
        points = 0.0
        topics: dict[str, Any] = {}
        negated: dict[str, list[str]] = {}
        if not found:
            return points, topics, negated
        for name, hits in found.items():
            negative = self._negative.get(name)
            if negative:
                vetoes = [t.label for t in negative if _where(t, texts)]
                if vetoes:
                    negated[name] = vetoes
                    continue
            topic_points, topics[name] = self._topic_part(self._topics[name].weight, hits)
            points += topic_points
        return points, topics, negated

    @staticmethod
    def _topic_part(weight: float, hits: list[tuple[_Term, str]]
                    ) -> tuple[float, dict[str, Any]]:
        """One matched topic's points and its entry in the breakdown."""
        raw = 0.0
        labels: list[str] = []
        in_title: list[str] = []
        weights: dict[str, float] = {}
        for term, where in hits:
            labels.append(term.label)
            if where == "title":
                in_title.append(term.label)
                raw += term.weight * TITLE_FACTOR
            else:
                raw += term.weight
            if term.weight != 1.0:
                weights[term.label] = term.weight
        labels.sort()
        in_title.sort()
        part: dict[str, Any] = {"keywords": labels, "title": in_title, "weight": weight,
                                "points": round(weight * raw, 3)}
        if weights:
            part["term_weights"] = weights
        return weight * raw, part

    def score(
        self,
        *,
        title: str | None,
        text: str | None,
        published_at: datetime | None,
        source_weight: float,
        now: datetime,
        source: str | None = None,
        engagement: Engagement = NEUTRAL,
        cluster_sources: Sequence[str] | None = None,
        half_life_hours: float | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """The score and its breakdown. ``now`` is the moment the item is scored as of (the
        crawl's fetch time); ``cluster_sources`` the distinct sources of its cluster
        (default: its own source alone); ``half_life_hours`` replaces the scorer's own
        (a rescore keeps each signal's)."""
        half_life = half_life_hours or self._half_life
        points, topics, negated = self._relevance(title or "", text or "", source)
        relevance = 1.0 - math.exp(-points / SATURATION)
        age_hours = None
        freshness = FRESHNESS_FLOOR
        if published_at is not None:
            age_hours = max(0.0, (now - published_at).total_seconds() / 3600.0)
            decay = 0.5 ** (age_hours / half_life)
            freshness = FRESHNESS_FLOOR + (1.0 - FRESHNESS_FLOOR) * decay
        # The common cases (no percentile, no cluster yet) skip the helpers: per-item cost.
        engaged = 1.0 if engagement.percentile is None else engagement_factor(
            engagement.percentile)
        base = round(100.0 * relevance * engaged * freshness * source_weight, 4)
        if cluster_sources:
            sources = sorted(set(cluster_sources))
            corroborated = corroboration_factor(len(sources))
            value = final_score(base, corroborated)
        else:
            sources = [source] if source else []
            corroborated = 1.0
            value = 100.0 if base >= 100.0 else round(base, 2)
        # Parts that say nothing (no negative hit, no engagement count) are left out: the
        # breakdown is JSON-encoded for every stored row, and its size is per-item cost.
        breakdown = {
            "version": SCORING_VERSION,
            "topics": topics,
            "points": round(points, 3),
            "relevance": round(relevance, 4),
            "engagement": {"factor": engaged} if engagement.value is None else {
                "metric": LABELS.get(engagement.kind or ""),
                "value": engagement.value,
                "percentile": engagement.percentile,
                "reference": engagement.reference,
                "factor": engaged,
            },
            "age_hours": None if age_hours is None else round(age_hours, 2),
            "half_life_hours": half_life,
            "freshness": round(freshness, 4),
            "source": source,
            "source_weight": source_weight,
            "base": base,
            "corroboration": {"sources": sources, "factor": corroborated},
            "score": value,
        }
        if negated:
            breakdown["negative"] = negated
        return value, breakdown
