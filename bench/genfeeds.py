"""Generate a synthetic feed corpus for the benchmark.

Writes ``DEST/feeds/fNNN.xml``: mostly RSS 2.0, every tenth feed Atom 1.0, each
with ``entries`` items whose descriptions are 1–3 KB of HTML paragraphs. Output is
deterministic for a given seed (and ``now``).

The descriptions are word salad with the statistics of real prose rather than readable
sentences: content words drawn from a Zipf distribution over 20,000 words (the word lists
below take the frequent ranks, generated words the long tail), stop words between them,
and a handful of subject words per article that recur through it, as an article's names
and topic words do. Templated sentences over a few hundred words, this generator's first
design, gave every text nearly the same simhash (bits biased 0.27 on average from even,
against 0.06 for ``../shared/realdata/feeds``), so near-duplicate lookups cost many times
what they cost on real feeds; these texts measure 0.095 (docs/benchmarks.md).

Usage::

    python bench/genfeeds.py DEST [--feeds 200] [--entries 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

logger = logging.getLogger(__name__)

ATOM_EVERY = 10  # every tenth feed is Atom, so parsers see both formats
VOCABULARY = 20_000
ZIPF_OFFSET = 30  # weight of rank r = 1 / (r + 30): no single word dominates a text
SUBJECT_RATE = 0.2  # share of content words that are the article's own subject words
STOP_RATE = 0.8  # chance of a stop word after each content word
KEYWORD_RATE = 0.1  # share of sentences naming a keyword (≈ 2 items in 3 match a bench topic)
TITLE_KEYWORD_RATE = 0.1
TRACKING_RATE = 0.15  # share of links carrying utm_* parameters
MAX_AGE = timedelta(days=7)


def _list(text: str) -> tuple[str, ...]:
    """Word lists are written as comma-separated text to keep them readable here."""
    return tuple(word.strip() for word in text.split(","))


ADJECTIVES = _list(
    "new, early, regional, internal, public, quarterly, modest, major, unexpected, "
    "experimental, long-awaited, open, shared, local, national, independent, faster, "
    "cheaper, larger, smaller, updated, revised, final, preliminary, annual, critical, "
    "routine, legacy, hybrid, remote"
)
NOUNS = _list(
    "report, committee, platform, network, budget, survey, company, project, framework, "
    "council, market, supplier, team, study, agency, proposal, service, database, "
    "pipeline, standard, system, programme, release, update, investigation, plant, grid, "
    "warehouse, startup, exchange, library, toolkit, dataset, contract, regulator, "
    "campaign, forecast"
)
PLURALS = _list(
    "customers, developers, analysts, households, engineers, researchers, investors, "
    "operators, users, officials, suppliers, small businesses, hospitals, schools, "
    "maintainers, utilities, retailers, drivers"
)
VERBS_PAST = _list(
    "announced, delayed, approved, released, criticised, expanded, reviewed, replaced, "
    "tested, rejected, published, upgraded, postponed, confirmed, launched, reduced, "
    "doubled, paused, restored, simplified"
)
VERBS_BASE = _list(
    "improve, replace, expand, review, reduce, support, simplify, delay, publish, test, "
    "fund, audit, rebuild, retire, extend"
)
ADVERBS = _list(
    "quietly, sharply, gradually, unexpectedly, finally, again, slowly, largely, "
    "briefly, steadily, publicly, formally"
)
PLACES = _list(
    "the capital, the northern region, three coastal towns, the port district, "
    "several member states, the valley, two neighbouring provinces, the city centre"
)
PEOPLE = _list(
    "a spokesperson, the chief executive, the project lead, an independent analyst, "
    "the finance minister, a senior engineer, the mayor, a union representative"
)
KEYWORDS = _list(
    "ransomware, open source, AI, zero-day, vulnerability, machine learning, climate, "
    "renewable energy, CVE, LLM, data breach, Python, Linux"
)
SECTIONS = _list("news, business, tech, science, security, energy, world, opinion")
CATEGORIES = _list(
    "Technology, Business, Security, Science, Energy, Politics, Markets, Open Source, "
    "AI, Climate, Health, Transport"
)
UTM_SOURCES = _list("rss, newsletter, twitter, partner, feedreader")


@dataclass(frozen=True, slots=True)
class _Item:
    title: str
    link: str
    guid: str
    published: datetime
    categories: tuple[str, ...]
    html: str


def _cap(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would turn "AI" into "Ai")."""
    return text[:1].upper() + text[1:]


def _title(rng: random.Random) -> str:
    """A headline; numbers and several slots keep repeats rare across 20,000 items."""
    c = rng.choice
    subject = c(KEYWORDS) if rng.random() < TITLE_KEYWORD_RATE else c(NOUNS)
    form = rng.randrange(5)
    if form == 0:
        title = f"{c(ADJECTIVES)} {subject} {c(VERBS_PAST)} in {c(PLACES)}"
    elif form == 1:
        title = f"Why {c(PLURALS)} are watching the {c(ADJECTIVES)} {subject}"
    elif form == 2:
        title = f"{c(PEOPLE)} defends {subject} plan as {c(PLURALS)} push back"
    elif form == 3:
        title = f"{subject} {c(VERBS_PAST)} after {c(ADJECTIVES)} {c(NOUNS)} in {c(PLACES)}"
    else:
        title = f"{rng.randint(2, 400)} {c(PLURALS)} {c(VERBS_PAST)} by {c(ADJECTIVES)} {subject}"
    return _cap(title)


# Stop words of running text, most frequent first (the simhash drops them, as it does in
# real text).
STOP = _list("the, of, and, to, in, a, is, that, for, it, was, on, with, as, by, at, from, "
             "this, has, be, are, its, their, which, will")
# The syllables of the long tail's generated words. A small inventory keeps them about as
# compressible as English (PostgreSQL compressed 98 % of 2–3 KB texts, to 71 % of their size;
# realdata feeds: 85 %, to 66 %); a large one made them random-looking, and most rows went
# to TOAST uncompressed.
ONSETS = _list("b, d, g, k, l, m, n, p, r, s, t")
NUCLEI = _list("a, e, i, o")
CODAS = ("", "", "", "n", "r")


class Prose:
    """Article bodies drawn word by word (see the module docstring)."""

    def __init__(self, rng: random.Random) -> None:
        known = sorted({w for words in (ADJECTIVES, NOUNS, PLURALS, VERBS_PAST, VERBS_BASE,
                                        ADVERBS) for w in words if " " not in w})
        rng.shuffle(known)
        made: set[str] = set()
        while len(made) < VOCABULARY - len(known):
            word = "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)
                           for _ in range(rng.choice((1, 2, 2, 3, 3))))
            if word not in known:
                made.add(word)
        tail = sorted(made)
        rng.shuffle(tail)
        self.words = known + tail
        self.cumulative = list(itertools.accumulate(
            1 / (rank + ZIPF_OFFSET) for rank in range(len(self.words))))
        self.stop_cumulative = list(itertools.accumulate(
            1 / (rank + 1.5) for rank in range(len(STOP))))

    def _sentence(self, rng: random.Random, subjects: list[str]) -> str:
        content = rng.choices(self.words, cum_weights=self.cumulative, k=rng.randint(6, 16))
        stops = rng.choices(STOP, cum_weights=self.stop_cumulative, k=len(content))
        out: list[str] = []
        for word, stop in zip(content, stops, strict=True):
            out.append(rng.choice(subjects) if rng.random() < SUBJECT_RATE else word)
            if rng.random() < STOP_RATE:
                out.append(stop)
        if rng.random() < KEYWORD_RATE:
            out.append(f"a move linked to {rng.choice(KEYWORDS)} concerns")
        return _cap(" ".join(out)) + "."

    def html(self, rng: random.Random, host: str) -> str:
        """1–3 KB of HTML: paragraphs of 3–6 sentences with a little inline markup."""
        subjects = rng.choices(self.words, cum_weights=self.cumulative, k=rng.randint(5, 12))
        # Stop below 3 KB: the last paragraph can add up to ~700 bytes past the target.
        target = rng.randint(930, 2100)
        paragraphs: list[str] = []
        size = 0
        while size < target:
            chosen = [self._sentence(rng, subjects) for _ in range(rng.randint(3, 6))]
            mark = rng.random()
            if mark < 0.2:
                chosen[0] = f"<strong>{chosen[0]}</strong>"
            body = " ".join(chosen)
            if 0.2 <= mark < 0.35:
                body += f' <a href="https://{host}/related/{rng.randrange(10**6)}">Read more</a>.'
            paragraph = f"<p>{body}</p>"
            paragraphs.append(paragraph)
            size += len(paragraph)
        return "".join(paragraphs)


def _link(rng: random.Random, host: str, feed: int, entry: int, title: str) -> str:
    slug = "-".join(title.lower().split()[:6]).replace(",", "")
    link = f"https://{host}/{rng.choice(SECTIONS)}/{slug}-{feed:03}{entry:04}"
    if rng.random() < TRACKING_RATE:
        link += f"?utm_source={rng.choice(UTM_SOURCES)}&utm_medium=feed&utm_campaign=c{feed}"
    return link


def _items(
    rng: random.Random, feed: int, entries: int, now: datetime, prose: Prose
) -> list[_Item]:
    host = f"www.outlet{feed:03}.example"
    items = []
    for entry in range(entries):
        # Titles are drawn per item, not pooled: repeated titles would look like duplicates.
        title = _title(rng)
        link = _link(rng, host, feed, entry, title)
        age = timedelta(seconds=rng.randrange(int(MAX_AGE.total_seconds())))
        items.append(
            _Item(
                title=title,
                link=link,
                guid=f"tag:outlet{feed:03}.example,2020:{entry:04}",
                published=(now - age).replace(microsecond=0),
                categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 3))),
                html=prose.html(rng, host),
            )
        )
    # Newest first, as real feeds are.
    items.sort(key=lambda item: item.published, reverse=True)
    return items


def _rss(feed: int, items: list[_Item], now: datetime) -> str:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n',
        f"<title>Outlet {feed:03}</title>\n<link>https://www.outlet{feed:03}.example/</link>\n",
        f"<description>Synthetic benchmark feed {feed:03}</description>\n",
        f"<lastBuildDate>{format_datetime(now, usegmt=True)}</lastBuildDate>\n",
    ]
    for item in items:
        categories = "".join(f"<category>{escape(c)}</category>" for c in item.categories)
        parts.append(
            f"<item><title>{escape(item.title)}</title><link>{escape(item.link)}</link>"
            f'<guid isPermaLink="false">{item.guid}</guid>'
            f"<pubDate>{format_datetime(item.published, usegmt=True)}</pubDate>{categories}"
            f"<description><![CDATA[{item.html}]]></description></item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _atom(feed: int, items: list[_Item], now: datetime) -> str:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n',
        f"<title>Outlet {feed:03}</title>\n<id>tag:outlet{feed:03}.example,2020:feed</id>\n",
        f'<link rel="alternate" href="https://www.outlet{feed:03}.example/"/>\n',
        f"<updated>{_rfc3339(now)}</updated>\n<author><name>Outlet {feed:03}</name></author>\n",
    ]
    for item in items:
        categories = "".join(f"<category term={quoteattr(c)}/>" for c in item.categories)
        stamp = _rfc3339(item.published)
        parts.append(
            f"<entry><title>{escape(item.title)}</title><id>{item.guid}</id>"
            f'<link rel="alternate" href={quoteattr(item.link)}/>'
            f"<published>{stamp}</published><updated>{stamp}</updated>{categories}"
            f'<summary type="html">{escape(item.html)}</summary></entry>\n'
        )
    parts.append("</feed>\n")
    return "".join(parts)


def generate(
    dest: Path,
    feeds: int = 200,
    entries: int = 100,
    seed: int = 1,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Write the corpus under ``dest`` and return the feed paths relative to it."""
    rng = random.Random(seed)
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    prose = Prose(rng)
    out_dir = dest / "feeds"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for feed in range(feeds):
        items = _items(rng, feed, entries, moment, prose)
        is_atom = feed % ATOM_EVERY == ATOM_EVERY - 1
        text = _atom(feed, items, moment) if is_atom else _rss(feed, items, moment)
        relative = f"feeds/f{feed:03}.xml"
        (dest / relative).write_text(text, encoding="utf-8")
        written.append(relative)
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``python bench/genfeeds.py DEST``."""
    parser = argparse.ArgumentParser(description="Generate a synthetic feed corpus.")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    paths = generate(args.dest, args.feeds, args.entries, args.seed)
    size = sum((args.dest / p).stat().st_size for p in paths)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {len(paths)} feeds ({size / 1e6:.1f} MB) under {args.dest}/feeds in {elapsed:.2f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
