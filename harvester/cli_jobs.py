"""``harvest scheduler`` and ``harvest jobs …``: crawls submitted to Scrapyd on schedule."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
import psycopg
from rich.table import Table

from harvester.cli import EXIT_FAILED, EXIT_USAGE, _load, console, err, friendly, main
from harvester.config import get_config
from harvester.messages import first_line, shown, table_time
from harvester.services import database, scheduler, scrapyd
from harvester.sources import SPIDERS, Source, SourcesError, SourcesFile


def _connect() -> psycopg.Connection[Any]:
    url = database.resolve_url(get_config())
    database.ensure_schema(url)
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _scheduler(conn: psycopg.Connection[Any]) -> scheduler.Scheduler:
    return scheduler.Scheduler(conn, scheduler.Cluster(scrapyd.nodes()),
                               spider_for=lambda s: SPIDERS[s.kind])


def _print_report(report: scheduler.TickReport) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
    for url, why in report.nodes_down:
        console.print(f"{stamp} [red]node down[/] {url}: {shown(why)}", highlight=False)
    for source, job, node in report.submitted:
        console.print(f"{stamp} submitted {source}: job {job} on {node}", highlight=False)
    for source in report.confirmed:
        console.print(f"{stamp} {source}: an interrupted submission was found on its node",
                      highlight=False)
    for source, state in report.skipped_running:
        console.print(f"{stamp} [yellow]skipped[/] {source}: its previous job is still "
                      f"{state}", highlight=False)
    for source, job, node in report.unanswered:
        console.print(f"{stamp} [yellow]skipped[/] {source}: its job {job} is on {node}, "
                      "which does not answer; it may still run there, so the source waits "
                      "for that node", highlight=False)
    for source, job in report.lost:
        console.print(f"{stamp} [yellow]lost[/] {source}: job {job} is listed by no node "
                      "(cancelled before it started, or its node restarted); its outcome "
                      "is unknown", highlight=False)
    for source, outcome in report.finished:
        console.print(f"{stamp} finished {source}: {shown(outcome)}", highlight=False)
    for source, why in report.not_submitted:
        console.print(f"{stamp} [red]not submitted[/] {source}: {shown(why)}", highlight=False)


class _Stop:
    """Set by SIGTERM/SIGINT: the loop finishes its tick and exits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()


@main.command("scheduler")
@click.option("--tick", "tick_s", default=10.0, show_default=True,
              type=click.FloatRange(min=0.5),
              help="Seconds between looks at what is due (at least 0.5).")
@click.option("--once", is_flag=True, help="One tick, then exit (for cron or a check).")
@click.pass_context
@friendly
def scheduler_command(ctx: click.Context, tick_s: float, once: bool) -> None:
    """Submit each enabled source to Scrapyd when its interval (or cron) is due.

    State is kept in PostgreSQL: a restart neither loses nor repeats a run. Nodes come from
    HARVEST_SCRAPYD_URLS; each job goes to the least loaded node that answers."""
    stop = _Stop()
    sources: SourcesFile | None = None
    conn: psycopg.Connection[Any] | None = None
    sched: scheduler.Scheduler | None = None
    done = True  # with --once: whether the pass did its job (cron sees the exit status)
    while True:
        try:
            sources = _load(ctx)
        except SourcesError as exc:
            if sources is None:
                raise
            said = shown(exc).rstrip(".")  # "…document)). (keeping…" read as two sentences
            err.print(f"[red]error:[/] {said}; the previous sources are kept meanwhile",
                      highlight=False)
        try:
            if conn is None or conn.closed:
                conn = _connect()
                sched = _scheduler(conn)
                sched.lock()
            assert sched is not None
            report = sched.tick(sources.sources)
            _print_report(report)
            done = not report.not_submitted
        except (psycopg.OperationalError, database.DatabaseUnavailable) as exc:
            first = first_line(exc)
            later = "" if once else f"; trying again in {tick_s:g} s"
            err.print(f"[red]database unreachable[/] ({shown(first)}){later}", highlight=False)
            done = False
            if conn is not None:
                conn.close()
            conn = None
        except scheduler.SchedulerError as exc:
            err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
            sys.exit(EXIT_USAGE)
        if once or stop.event.wait(tick_s):
            break
    if conn is not None:
        conn.close()
    if once and not done:
        sys.exit(EXIT_FAILED)  # a source due was not submitted, or no database


@main.group()
def jobs() -> None:
    """Scheduled crawls: list them, run one now, pause or resume a source."""


def _when(value: datetime | None) -> str:
    return table_time(value, seconds=True)


@jobs.command("list")
@click.pass_context
@friendly
def jobs_list(ctx: click.Context) -> None:
    """Every source's schedule and last job, and every node's load."""
    parsed = _load(ctx)
    cluster = scheduler.Cluster(scrapyd.nodes())
    cluster.refresh()
    table = Table(title="jobs", title_justify="left")
    for col in ("source", "kind", "schedule", "next due", "paused", "last job", "node", "state",
                "last outcome", "skipped"):
        table.add_column(col, overflow="fold")
    with _connect() as conn:
        rows = scheduler.load_rows(conn)
        finished = scheduler.finished_outcomes(
            conn, [row["job_id"] for row in rows.values() if row.get("job_id")])
        for source in parsed.sources:
            row = rows.get(source.name) or {}
            job_id = row.get("job_id")
            found = cluster.find(job_id) if job_id else None
            state = found[1] if found else (row.get("job_state") or "-")
            # The last job's own verdict once its crawl recorded it: the stored one is the
            # scheduler's, written at its next pass, and until then the job before's
            # ("succeeded" next to a job that failed, or that was killed and recorded
            # nothing, for a job run by hand).
            outcome = finished.get(job_id) if job_id else None
            if outcome is None and state == "finished" and row.get("job_state") != "finished":
                outcome = scheduler.NO_RUN
            outcome = outcome or row.get("last_outcome") or "-"
            table.add_row(source.name, source.kind, source.cron or f"every {source.interval}",
                          _when(row.get("next_due")) if source.enabled else "off",
                          "yes" if row.get("paused") else "no", job_id or "-",
                          row.get("job_node") or "-", state, outcome,
                          str(row.get("skipped_running") or 0))
    console.print(table)
    for view in cluster.views:
        if view.up:
            console.print(f"[green]up[/] {view.node.url}: load {view.load}", highlight=False)
        else:
            console.print(f"[red]down[/] {view.node.url}: {shown(view.error)}", highlight=False)


def _source(ctx: click.Context, name: str) -> Source:
    return _load(ctx).get(name)


@jobs.command("run")
@click.argument("name")
@click.pass_context
@friendly
def jobs_run(ctx: click.Context, name: str) -> None:
    """Submit NAME to the least loaded node now (unless its last job still runs)."""
    source = _source(ctx, name)
    with _connect() as conn:
        try:
            job_id, node = _scheduler(conn).run_now(source)
        except scheduler.SchedulerError as exc:
            err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
            sys.exit(1)
    console.print(f"submitted {name}: job {job_id} on {node}", highlight=False)


@jobs.command("pause")
@click.argument("name")
@click.pass_context
@friendly
def jobs_pause(ctx: click.Context, name: str) -> None:
    """Stop scheduling NAME (a running job is not cancelled)."""
    _source(ctx, name)
    with _connect() as conn:
        scheduler.set_paused(conn, name, True)
    console.print(f"{name}: paused; `harvest jobs resume {name}` schedules it again",
                  highlight=False)


@jobs.command("resume")
@click.argument("name")
@click.pass_context
@friendly
def jobs_resume(ctx: click.Context, name: str) -> None:
    """Schedule NAME again (due at once if it missed its time while paused)."""
    _source(ctx, name)
    with _connect() as conn:
        scheduler.set_paused(conn, name, False)
    console.print(f"{name}: resumed", highlight=False)

