"""Terminal rendering for the CLI (rich): tables and the live crawl view."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.style import Style
from rich.table import Table
from rich.text import Text

from harvester import messages
from harvester.messages import printable, shown, table_time
from harvester.parsers.html import html_to_text
from harvester.runner import SourceOutcome

SUMMARY_COLUMNS = (("fetched", "fetched"), ("new", "new"), ("reseen", "re-seen"),
                   ("rejected", "rejected"), ("errors", "errors"), ("not_modified", "304s"))
# Shown only when some source has them: entries dropped as copies of others in the run
# (without it "entries 6, new 3" went unexplained), API items that were gone, rate-limit
# waits, robots.txt refusals, sitemap pages past a source's `limit` (a dated one is taken
# later only if its lastmod moves: the count was only in crawl_runs.stats).
OPTIONAL_COLUMNS = (("duplicates", "duplicates"), ("missing", "missing"), ("waits", "waits"),
                    ("robots_forbidden", "robots.txt"), ("over_limit", "over limit"),
                    ("dropped_fields", "fields dropped"))


def _columns(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(counter, label) of the columns ``rows`` get, in order."""
    extra = [(k, label) for k, label in OPTIONAL_COLUMNS
             if any(row.get(k) for row in rows.values())]
    return [*SUMMARY_COLUMNS, *extra, ("entries", "entries"), ("spooled", "spooled")]


def crawl_table(rows: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("source", no_wrap=True)
    columns = _columns(rows)
    for _, label in columns:
        table.add_column(label, justify="right")
    for source, row in rows.items():
        table.add_row(source, *(str(row.get(k, 0)) for k, _ in columns))
    return table


class CrawlCounts:
    """The per-source counters: a table, or one line per source where the table does not
    fit (an 80-column terminal cut its headers to "fetc…", "re-s…", "reje…")."""

    def __init__(self, rows: dict[str, dict[str, Any]], title: str) -> None:
        self.rows = rows
        self.title = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = crawl_table(self.rows, self.title)
        # Measured without the width limit, which the measurement is clamped to.
        natural = Measurement.get(console, options.update(width=100_000), table).maximum
        if natural <= options.max_width:
            yield table
            return
        yield Text(self.title, style="italic")
        columns = _columns(self.rows)
        for source, row in self.rows.items():
            counts = ", ".join(f"{label} {row.get(k, 0)}" for k, label in columns)
            yield Text(f"{source}: {counts}")


def live_view(get_rows: Callable[[], dict[str, dict[str, Any]]]) -> Callable[[], CrawlCounts]:
    return lambda: CrawlCounts(get_rows(), "crawling…")


def summary(console: Console, outcomes: Sequence[SourceOutcome],
            replay_command: str = "harvest replay") -> None:
    rows = {o.source: o.counters for o in outcomes if not o.skipped}
    if rows:
        console.print(CrawlCounts(rows, "crawl summary"))
    for outcome in outcomes:
        if outcome.config_error:
            console.print(f"[red]not crawled[/] {outcome.source}: {shown(outcome.config_error)}")
        elif outcome.skipped:
            console.print(f"[yellow]skipped[/] {outcome.source}: {shown(outcome.skipped)}")
        elif outcome.lost:
            console.print(f"[red]lost[/] {outcome.source}: {outcome.lost} items were neither "
                          f"stored nor spooled: {shown(outcome.error)}")
        elif outcome.failed and (outcome.error or outcome.finish_reason != "shutdown"):
            console.print(f"[red]failed[/] {outcome.source}: {_errors(outcome)}")
        elif outcome.counters.get("errors"):
            console.print(f"[yellow]partly failed[/] {outcome.source}: {_errors(outcome)}")
        if outcome.finish_reason not in (None, "finished"):
            # Interrupted (Ctrl-C: "shutdown") or stopped early: the counts are partial.
            console.print(f"[yellow]stopped early[/] {outcome.source}: finish reason "
                          f"{escape(outcome.finish_reason)}")
        if dropped := outcome.counters.get("dropped"):
            fields = ", ".join(f"{escape(name)} ×{n}" for name, n in sorted(dropped.items()))
            console.print(f"[yellow]fields dropped[/] {outcome.source}: the items were kept "
                          f"without fields the source sent in a form that cannot be used "
                          f"({fields}); the crawl log shows the first of each")
        for old_url, new_url in (outcome.counters.get("moved") or {}).items():
            console.print("[yellow]moved[/] " + escape(messages.moved(outcome.source, old_url,
                                                                      new_url)))
        spooled = int(outcome.counters.get("spooled") or 0)
        waiting = spooled - int(outcome.counters.get("spool_stored") or 0)
        # The next crawl replays the default spool only (a spool directory of its own is
        # the crawl's setting).
        replays = f"`{escape(replay_command)}` " + (
            "(or the next crawl) " if replay_command == "harvest replay" else "")
        if waiting > 0:
            console.print(f"[yellow]spooled[/] {outcome.source}: {waiting} items wait in the "
                          f"spool; {replays}stores them")
        elif spooled:
            console.print(f"spooled {outcome.source}: {spooled} items went to the spool while "
                          "the database (or the store worker) was away and were stored when "
                          "the crawl ended")
        if outcome.counters.get("run_spooled"):
            # A forced stop with every item stored: only the log said where the run went.
            console.print(f"[yellow]spooled[/] {outcome.source}: the run's record is in the "
                          f"spool; {replays}stores it")


def _errors(outcome: SourceOutcome) -> str:
    """The source's last error; with several, how many (the others are in the log)."""
    count = int(outcome.counters.get("errors", 0))
    last = shown(outcome.error or "")
    return f"{count} errors, the last: {last}" if count > 1 else last


def top_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One row per story (cluster): its best signal, and every source that carried it."""
    table = Table(title="top signals", title_justify="left")
    table.add_column("id", justify="right")  # what `harvest explain` takes
    table.add_column("score", justify="right")
    table.add_column("sources")
    table.add_column("published")
    table.add_column("title")
    table.add_column("why")
    for row in rows:
        topics = (row.get("score_breakdown") or {}).get("topics") or {}
        why = "; ".join(f"{name}: {', '.join(t['keywords'])}" for name, t in topics.items())
        published = table_time(row["published_at"])
        # A Text with a link style, not markup: a URL or title may hold "[" and "]". No
        # link for a URL with a control code: it would end the terminal's link sequence.
        url = row["url"]
        title = Text(printable((row["title"] or url or "")[:90]),
                     style=Style(link=url) if url and url.isprintable() else "")
        sources = row.get("cluster_sources") or [row["source"]]
        size = row.get("cluster_size", 1)
        carried = ", ".join(sources) + (f" ({size} signals)" if size > len(sources) else "")
        table.add_row(str(row["id"]), f"{row['score']:.1f}", carried, published,
                      title, shown(why) or "-")
    return table


#: What a rejection's raw input is shown by, first found first.
# "loc" and "status": a sitemap's rejections (a location that is no web address, a child
# sitemap too deep, a page gone) showed "-", and two of them looked the same; "why" (and
# else the card's text): a listing page's cards did too.
_REJECT_DETAIL = ("error", "why", "title", "value", "text", "item", "tweet", "hit", "child",
                  "loc", "status", "head")


def rejects_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One row per rejection, newest first; ``detail`` is the error or what the input was."""
    table = Table(title=f"rejections ({len(rows)}, newest first)", title_justify="left")
    for col in ("id", "when", "source", "reason", "field", "url", "detail"):
        table.add_column(col, justify="right" if col == "id" else "left",
                         overflow="fold" if col in ("url", "detail") else "ellipsis")
    for row in rows:
        raw = row["raw"] or {}
        detail = next((raw[k] for k in _REJECT_DETAIL if raw.get(k)), None)
        if detail is None and isinstance(raw.get("html"), str):
            detail = html_to_text(raw["html"]) or None  # a listing's card, as read
        text = " ".join(str(detail).split())[:120] if detail is not None else "-"
        if detail is not None and "line" in raw:  # a text sitemap's line
            text = f"line {raw['line']}: {text}"
        elif isinstance(raw.get("index"), int):  # a card of a listing page, from 1
            text = f"card {raw['index'] + 1}: {text}"
        table.add_row(str(row["id"]), table_time(row["created_at"]),
                      shown(row["source"]), row["reason"], row["field"] or "-",
                      # A 3,000-character URL (url_too_long) filled hundreds of lines.
                      shown(_cut(row["url"] or "-", 200)), shown(text))
    return table


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
