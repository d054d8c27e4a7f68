"""``harvest brief``: the week's top stories per topic, stored and printed or written."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape

from harvester.cli import EXIT_USAGE, _connect, console, err, friendly, main
from harvester.services import brief as briefs


def _week(value: str | None, now: datetime) -> briefs.IsoWeek:
    """The week asked for, or the current one; one red sentence and exit 2 when wrong."""
    current = briefs.IsoWeek.of(now)
    if value is None:
        return current
    try:
        week = briefs.IsoWeek.parse(value)
    except briefs.WeekError as exc:
        err.print(f"[red]error:[/] --week {escape(str(exc))}.", highlight=False)
        sys.exit(EXIT_USAGE)
    if week > current:
        err.print(f"[red]error:[/] --week {week} has not started yet (this is {current}); "
                  "a brief covers the current week or an earlier one.", highlight=False)
        sys.exit(EXIT_USAGE)
    return week


@main.command("brief")
@click.option("--week", default=None, metavar="YYYY-Www",
              help="ISO week, e.g. 2026-W47 (default: the current week, UTC).")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md",
              show_default=True, help="What to print or write.")
@click.option("--limit", default=briefs.DEFAULT_LIMIT, show_default=True,
              type=click.IntRange(1, 100), help="Stories per topic.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the brief to this file instead of printing it (- prints it).")
@friendly
def brief(week: str | None, fmt: str, limit: int, output: Path | None) -> None:
    """The week's top stories per topic: one entry per story (near-duplicates from several
    sources are one story), with its sources, links, score and why.

    The brief is stored in the database (both formats); generating a week again replaces
    it."""
    now = datetime.now(UTC)
    chosen = _week(week, now)
    # The file is written before the transaction that stores the brief ends: a brief
    # that could not be written does not replace the stored one (the exit rolls back).
    with _connect() as conn:
        made = briefs.generate(conn, chosen, limit=limit, now=now)
        text = made.html() if fmt == "html" else made.markdown()
        if output is None or str(output) == "-":  # "-" wrote a file named "-"
            click.echo(text, nl=False)
            return
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            err.print(f"[red]error:[/] cannot write {escape(str(output))}: "
                      f"{escape(str(exc.strerror or exc))}; choose "
                      "another --output.", highlight=False)
            sys.exit(EXIT_USAGE)
    console.print(f"{made.title}: {made.story_count} stories in {len(made.sections)} sections, "
                  f"written to {escape(str(output))}", highlight=False)
