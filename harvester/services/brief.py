"""The weekly brief: a week's top story clusters per topic, as Markdown and a standalone HTML
page, stored in ``briefs`` (one row per ISO week; regenerating replaces it).

Which signals: those dated in the ISO week (``published_at``, else ``first_seen``; UTC).
Each story is a cluster (``coalesce(cluster_id, id)``) and appears once per topic it
matched, under "Other" when it matched none; its score is its best signal's score, its title
and main link that signal's, and it lists every source that carried it that week with one
link each. See docs/brief.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb

from harvester.services.clustered import week_clusters

DEFAULT_LIMIT = 5
_WEEK = re.compile(r"^\s*(\d{4})-?W(\d{1,2})\s*$", re.IGNORECASE | re.ASCII)  # not "２０２６"


class WeekError(ValueError):
    """A ``--week`` value that names no ISO week; the message is one sentence."""


@dataclass(frozen=True, slots=True, order=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def parse(cls, value: str) -> IsoWeek:
        match = _WEEK.match(value)
        if not match:
            raise WeekError(f"{value!r} is not an ISO week; write it like 2026-W47")
        year, week = int(match.group(1)), int(match.group(2))
        if not 1 <= year <= 9998:  # 9999's last week ends in year 10000
            raise WeekError(f"{value!r} is not an ISO week: the year must be 1 to 9998")
        weeks = date(year, 12, 28).isocalendar().week  # 28 December is always in the last
        if not 1 <= week <= weeks:
            raise WeekError(f"{value!r} is not an ISO week: {year} has weeks 01 to {weeks}")
        return cls(year, week)

    @classmethod
    def of(cls, moment: datetime) -> IsoWeek:
        iso = moment.astimezone(UTC).isocalendar()
        return cls(iso.year, iso.week)

    @property
    def start(self) -> datetime:
        """Monday 00:00 UTC."""
        monday = date.fromisocalendar(self.year, self.week, 1)
        return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The next Monday 00:00 UTC (exclusive)."""
        return self.start + timedelta(days=7)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"


@dataclass(frozen=True, slots=True)
class Link:
    source: str
    url: str | None
    signal_id: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One story: a cluster of signals, represented by its best one."""

    cluster_id: int
    title: str
    url: str | None
    score: float
    seen_at: datetime
    size: int
    links: tuple[Link, ...]
    topics: dict[str, list[str]]  # every topic the story matched -> keywords

    @property
    def sources(self) -> list[str]:
        return [link.source for link in self.links]

    def why(self) -> str:
        """The reason it is here, in words: topics with their keywords, and its sources."""
        matched = [f"{name} ({', '.join(words)})" if words else name
                   for name, words in sorted(self.topics.items())]
        reason = f"matched {_and(matched)}" if matched else "matched no topic"
        if len(self.links) > 1:
            return f"It {reason}; {len(self.links)} sources carried it."
        return f"It {reason}."


@dataclass(frozen=True, slots=True)
class Section:
    topic: str | None  # None: the stories that matched no topic

    entries: list[Entry] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.topic if self.topic is not None else "Other"


@dataclass(frozen=True, slots=True)
class Brief:
    week: IsoWeek
    generated_at: datetime
    sections: list[Section]
    limit: int

    @property
    def title(self) -> str:
        return f"Weekly brief {self.week}"

    @property
    def signal_ids(self) -> list[int]:
        """The signals the brief links to, each once."""
        return sorted({link.signal_id for s in self.sections for e in s.entries
                       for link in e.links})

    @property
    def story_count(self) -> int:
        return len({e.cluster_id for s in self.sections for e in s.entries})

    def markdown(self) -> str:
        return render_markdown(self)

    def html(self) -> str:
        return render_html(self)


def _entry(row: dict[str, Any]) -> Entry:
    links = tuple(Link(source, url, int(signal_id))
                  for source, url, signal_id in row["links"] or [])
    return Entry(cluster_id=row["cluster"], title=row["title"] or row["url"] or "(untitled)",
                 url=row["url"], score=float(row["score"]), seen_at=row["seen_at"],
                 size=row["size"], links=links, topics=dict(row["matched"] or {}))


def build(conn: psycopg.Connection[Any], week: IsoWeek, *, limit: int = DEFAULT_LIMIT,
          now: datetime | None = None) -> Brief:
    """Select and rank the week's clusters (nothing is stored)."""
    if limit < 1:
        raise ValueError("a brief needs at least one entry per topic")
    sections: dict[str | None, Section] = {}
    for row in week_clusters(conn, week.start, week.end, limit):
        topic = row["topic"]
        sections.setdefault(topic, Section(topic)).entries.append(_entry(row))
    return Brief(week=week, generated_at=now or datetime.now(UTC),
                 sections=list(sections.values()), limit=limit)


def store(conn: psycopg.Connection[Any], brief: Brief) -> None:
    """Insert the week's brief, or replace the one generated before."""
    with conn.transaction():
        conn.execute("""
            INSERT INTO briefs (week, generated_at, markdown, html, signal_ids, params)
            VALUES (%(week)s, %(generated_at)s, %(markdown)s, %(html)s, %(ids)s, %(params)s)
            ON CONFLICT (week) DO UPDATE SET
                generated_at = EXCLUDED.generated_at, markdown = EXCLUDED.markdown,
                html = EXCLUDED.html, signal_ids = EXCLUDED.signal_ids,
                params = EXCLUDED.params""", {
            "week": str(brief.week), "generated_at": brief.generated_at,
            "markdown": brief.markdown(), "html": brief.html(), "ids": brief.signal_ids,
            "params": Jsonb({"limit": brief.limit, "stories": brief.story_count,
                             "topics": [s.topic for s in brief.sections]}),
        })


def generate(conn: psycopg.Connection[Any], week: IsoWeek, *, limit: int = DEFAULT_LIMIT,
             now: datetime | None = None) -> Brief:
    """Build the week's brief and store it (replacing an earlier one)."""
    brief = build(conn, week, limit=limit, now=now)
    store(conn, brief)
    return brief


def stored(conn: psycopg.Connection[Any], week: IsoWeek) -> dict[str, Any] | None:
    """The stored row of ``week``, or None."""
    row = conn.execute("SELECT week, generated_at, markdown, html, signal_ids, params "
                       "FROM briefs WHERE week = %s", (str(week),)).fetchone()
    if row is None:
        return None
    return dict(zip(("week", "generated_at", "markdown", "html", "signal_ids", "params"), row,
                    strict=True))


# -- rendering ---------------------------------------------------------------------------

def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _span(week: IsoWeek) -> str:
    """``16–22 November 2026``, ``30 November – 6 December 2026`` across months."""
    first, last = week.start.date(), (week.end - timedelta(days=1)).date()
    if first.year != last.year:
        return f"{first:%-d %B %Y} – {last:%-d %B %Y}"
    if first.month != last.month:
        return f"{first:%-d %B} – {last:%-d %B %Y}"
    return f"{first.day}–{last:%-d %B %Y}"


def _subtitle(brief: Brief) -> str:
    stories = brief.story_count
    return (f"{_span(brief.week)} (UTC) · generated {brief.generated_at:%Y-%m-%d %H:%M} UTC · "
            f"{stories} {'story' if stories == 1 else 'stories'}, top {brief.limit} per topic")


def _linkable(url: str | None) -> bool:
    # Only web links become links: a javascript: or data: URL stays inert text, and so does
    # one that does not parse (stored before validate checked that).
    try:
        return bool(url) and urlsplit(url or "").scheme in ("http", "https")
    except ValueError:
        return False


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _md_link(label: str, url: str | None) -> str:
    if not _linkable(url):
        return _md(label)
    target = (url or "").replace(" ", "%20").replace("<", "%3C").replace(">", "%3E")
    return f"[{_md(label)}](<{target}>)"


def render_markdown(brief: Brief) -> str:
    lines = [f"# {brief.title}", "", _subtitle(brief), ""]
    if not brief.sections:
        lines += ["_No signals are dated in this week._", ""]
    for section in brief.sections:
        lines += [f"## {_md(section.title)}", ""]
        for rank, entry in enumerate(section.entries, 1):
            sources = " · ".join(_md_link(link.source, link.url) for link in entry.links)
            lines += [f"{rank}. **{_md_link(entry.title, entry.url)}** — score {entry.score:.1f}",
                      f"   Sources: {sources}",
                      f"   Why: {_md(entry.why())}", ""]
    return "\n".join(lines)


_CSS = """
:root{color-scheme:light dark;--fg:#1f2023;--muted:#5c6066;--bg:#fcfcfb;--rule:#d8d9d6;
--link:#0a58c2;--chip:#eceef1}
@media (prefers-color-scheme:dark){:root{--fg:#e4e4e1;--muted:#a3a6ab;--bg:#16171a;
--rule:#393b40;--link:#8db6f7;--chip:#27292d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:17px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif}
main{max-width:44rem;margin:0 auto;padding:1.5rem 1rem 3rem}
h1{font-size:1.8rem;line-height:1.2;margin:0 0 .3rem}
.meta{color:var(--muted);font-size:.92rem;margin:0 0 1rem}
nav{font-size:.92rem;margin:0 0 1.5rem}
nav a{margin-right:.8rem;white-space:nowrap}
h2{font-size:1.25rem;margin:2rem 0 .8rem;padding-bottom:.25rem;border-bottom:1px solid var(--rule)}
ol{margin:0;padding-left:1.6rem}
li{margin:0 0 1.2rem}
h3{font-size:1.05rem;line-height:1.35;margin:0 0 .25rem;overflow-wrap:anywhere}
a{color:var(--link)}
p{margin:.15rem 0;overflow-wrap:anywhere}
.score{display:inline-block;color:var(--fg);background:var(--chip);border-radius:.35rem;
padding:0 .45rem;font-size:.85rem;font-variant-numeric:tabular-nums}
.line,.why{color:var(--muted);font-size:.92rem}
.empty{color:var(--muted);font-style:italic}
@media print{:root{--fg:#000;--bg:#fff;--muted:#333;--link:#000;--chip:#fff;--rule:#999}
body{font-size:11pt}main{max-width:none;padding:0}nav{display:none}
li{break-inside:avoid}h2{break-after:avoid}a{text-decoration:none}
.sources a::after{content:" <" attr(href) ">";font-size:.8em;color:var(--muted)}}
"""


def _a(label: str, url: str | None) -> str:
    if not _linkable(url):
        return escape(label)
    return f'<a href="{escape(url or "")}">{escape(label)}</a>'


def _html_entry(entry: Entry) -> str:
    sources = ", ".join(_a(link.source, link.url) for link in entry.links)
    signals = f" · {entry.size} signals" if entry.size > 1 else ""
    return (f"<li><h3>{_a(entry.title, entry.url)}</h3>\n"
            f'<p class="line"><span class="score">score {entry.score:.1f}</span>{signals}</p>\n'
            f'<p class="sources">Sources: {sources}</p>\n'
            f'<p class="why">Why: {escape(entry.why())}</p></li>')


def _anchors(sections: list[Section]) -> list[str]:
    """Each section's id, unique in the page: ``c++`` and ``c#`` both read ``topic-c-``,
    and the menu's second link went to the first."""
    seen: set[str] = set()
    out = []
    for section in sections:
        base = "other" if section.topic is None else "topic-" + re.sub(r"\W+", "-",
                                                                         section.topic)
        anchor, n = base, 1
        while anchor in seen:
            n += 1
            anchor = f"{base}{n}"
        seen.add(anchor)
        out.append(anchor)
    return out


def render_html(brief: Brief) -> str:
    title = escape(brief.title)
    body = [f"<header><h1>{title}</h1>",
            f'<p class="meta">{escape(_subtitle(brief))}</p>']
    anchors = _anchors(brief.sections)
    if len(brief.sections) > 1:
        body.append("<nav>" + "".join(f'<a href="#{escape(a)}">{escape(s.title)}</a>'
                                      for s, a in zip(brief.sections, anchors, strict=True))
                    + "</nav>")
    body.append("</header>")
    if not brief.sections:
        body.append('<p class="empty">No signals are dated in this week.</p>')
    for section, anchor in zip(brief.sections, anchors, strict=True):
        body.append(f'<section id="{escape(anchor)}"><h2>{escape(section.title)}</h2><ol>')
        body += [_html_entry(entry) for entry in section.entries]
        body.append("</ol></section>")
    # The policy lets the inline style apply and nothing else load or run: the page stays
    # inert even if a title ever slipped through unescaped.
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"color-scheme\" content=\"light dark\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" "
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
            f"<title>{title}</title>\n<style>{_CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")
