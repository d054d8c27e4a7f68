"""``harvest``: the operator's command line. Thin: parse arguments, call services, render."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import math
import os
import shlex
import shutil
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from w3lib.url import safe_url_string

from harvester import setting_values
from harvester.config import ConfigError, HarvestConfig, get_config
from harvester.messages import (
    console_width,
    first_line,
    shown,
    table_time,
    tolerate_narrow_output,
    utf8_output,
)
from harvester.messages import moved as moved_message
from harvester.services import clustered, database, embedded, queries, spool, state
from harvester.services.scrapyd import ScrapydError
from harvester.sources import SourcesError, SourcesFile, ago, load_sources

console = Console(soft_wrap=True, width=console_width(sys.stdout))
err = Console(stderr=True, soft_wrap=True, width=console_width(sys.stderr))
F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1  # the job ran and something failed (a source, a replay)
EXIT_USAGE = 2  # the job could not run: bad config, database unreachable


def friendly(func: F) -> F:
    """Turn the errors an operator can fix into one red sentence and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SourcesError, database.DatabaseUnavailable, embedded.EmbeddedError,
                ScrapydError, ConfigError) as exc:
            err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
            sys.exit(EXIT_USAGE)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            # An OperationalError, but the database is there: it was no "run `harvest db
            # start`" matter.
            err.print(f"[red]error:[/] the database gave up this command's transaction "
                      f"({shown(first_line(exc))}) after a conflict with a concurrent write; "
                      "run it again", highlight=False)
            sys.exit(EXIT_USAGE)
        except psycopg.OperationalError as exc:
            first = first_line(exc)
            fix = database.unreachable_hint()
            err.print(f"[red]error:[/] the database is unreachable ({shown(first)}); {fix}.",
                      highlight=False)
            sys.exit(EXIT_USAGE)
        except OSError as exc:
            if exc.filename is None:  # not a path: a socket, a bug
                raise
            err.print(f"[red]error:[/] {exc.strerror or type(exc).__name__}: "
                      f"{shown(exc.filename)}; "
                      "check HARVEST_HOME and the paths given.", highlight=False)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def _config() -> HarvestConfig:
    return get_config()


def _sources_path(ctx: click.Context) -> Path:
    return ctx.obj["sources"]


def _load(ctx: click.Context) -> SourcesFile:
    return load_sources(_sources_path(ctx))


def _connect(start: bool = True) -> psycopg.Connection[Any]:
    """A connection to a database whose schema is at head (older ones are migrated)."""
    url = database.resolve_url(_config(), start=start)
    database.ensure_schema(url)
    return psycopg.connect(url, connect_timeout=5)


#: Writing the output failed: the disk behind a redirect is full (/dev/full), a pipe's
#: reader is gone (`| head -1`), a terminal went away.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE)


class _Harvest(click.Group):
    """The ``harvest`` group: an output that cannot be written is one sentence on stderr
    (a full disk printed a 40-line traceback), and a closed pipe ends it quietly."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            if exc.filename is not None or exc.errno not in _OUTPUT_ERRNOS:
                raise
            if not _writing_output(exc):
                # A full disk under HARVEST_HOME (a file without a name in the error).
                with contextlib.suppress(OSError):
                    print(f"error: {exc.strerror}: free space where harvest writes "
                          f"(HARVEST_HOME, {get_config().home.absolute()}) or the output "
                          "goes", file=sys.stderr)
                sys.exit(EXIT_FAILED)
            # Nothing more reaches the broken stream, not even Python's flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if exc.errno != errno.EPIPE:
                with contextlib.suppress(OSError):  # stderr may be as full
                    print(f"error: cannot write the output ({exc.strerror}); write it "
                          "somewhere with room, or to the terminal", file=sys.stderr)
            sys.exit(EXIT_FAILED)


def _writing_output(exc: BaseException) -> bool:
    """Whether ``exc`` came from writing the output: raised in rich's or click's write to
    the terminal (or a print), not in a file harvest writes (a crawl's log on a full
    disk raised the same "No space left on device")."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code
        tb = tb.tb_next
    if last is None:
        return True
    return last.co_name in ("_write_buffer", "echo") and any(
        part in last.co_filename for part in ("rich", "click"))


@click.group(cls=_Harvest, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sources", "sources", type=click.Path(path_type=Path), default=None,
              help="Sources file (default: $HARVEST_SOURCES or ./sources.toml).")
@click.pass_context
def main(ctx: click.Context, sources: Path | None) -> None:
    """harvester: crawl sources, keep the signals that matter, in PostgreSQL."""
    tolerate_narrow_output()
    # Nothing harvest writes is for other users: backups (a whole pg_dump), snapshots,
    # spool files, logs and metrics were 0644, readable by every local account (as root
    # the embedded server opens HARVEST_HOME's directories for traversal). Scrapyd started
    # from here inherits it. The group keeps what the user's umask gives it.
    os.umask(os.umask(0o077) | 0o007)
    # Every time read back from PostgreSQL comes in the session's zone: the server's
    # default (the machine's at initdb, or an external server's postgresql.conf) or the
    # user's PGTZ. --json, the API, snapshots and archives then mixed +05:30 with the +00:00
    # of times computed here. libpq sends PGTZ at connect, so every connection this
    # process (and a Scrapyd or pg_dump it starts) opens reads UTC.
    os.environ["PGTZ"] = "UTC"
    ctx.ensure_object(dict)
    try:
        ctx.obj["sources"] = sources or _config().sources
    except ConfigError as exc:
        err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
        sys.exit(EXIT_USAGE)


# -- database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Manage the embedded PostgreSQL (unused when HARVEST_DATABASE_URL is set)."""


@db.command("start")
@friendly
def db_start() -> None:
    """Start the embedded PostgreSQL under $HARVEST_HOME/pg (created on first start)."""
    cfg = _config()
    if cfg.database_url:
        console.print("HARVEST_DATABASE_URL is set: the embedded server is not used.")
        return
    uri = embedded.start(cfg.pg_dir, cfg.pg_shared_buffers)
    # Started on purpose: long-running commands (serve, the scheduler) may start it again
    # on demand should it stop for another reason.
    embedded.forget_stop(cfg.pg_dir)
    console.print(f"embedded PostgreSQL running in {cfg.pg_dir}: {uri}", highlight=False)


@db.command("stop")
@friendly
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    cfg = _config()
    if cfg.database_url:
        # As `db start` says: the database in use is another one, and stopping this one
        # ("stopped") took down a server crawls without the variable were using.
        console.print("HARVEST_DATABASE_URL is set: the embedded server is not used.")
        return
    stopped = embedded.stop(cfg.pg_dir)
    console.print("stopped" if stopped else f"not running ({cfg.pg_dir})", highlight=False)


@db.command("status")
@friendly
def db_status() -> None:
    """Say which database is used and whether it answers; exit 1 when it does not."""
    cfg = _config()

    def answer(url: str) -> str | None:
        """Why the server does not answer (libpq's reason: a wrong password, no such
        database, a timeout), or None when it does."""
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return first_line(exc)
        return None

    if cfg.database_url:
        shown_url = database.describe_url(cfg.database_url)
        if why := answer(cfg.database_url):
            console.print(f"external {shown_url}: unreachable ({shown(why)})", highlight=False)
            sys.exit(EXIT_FAILED)
        console.print(f"external {shown_url}: up", highlight=False)
        return
    server = embedded.status(cfg.pg_dir)
    if not server.running or server.uri is None:
        console.print(f"embedded PostgreSQL in {cfg.pg_dir}: stopped", highlight=False)
        sys.exit(EXIT_FAILED)
    if why := answer(server.uri):
        # A process that holds the lock file but does not answer (stopped with SIGSTOP,
        # hung): "running", exit 0, while every command timed out.
        console.print(f"embedded PostgreSQL in {cfg.pg_dir}: running (pid {server.pid}) but "
                      f"not answering ({shown(why)})", highlight=False)
        sys.exit(EXIT_FAILED)
    console.print(f"embedded PostgreSQL in {cfg.pg_dir}: running (pid {server.pid})",
                  highlight=False)


@db.command("url")
@friendly
def db_url() -> None:
    """Print the connection URL (starting the embedded server if needed)."""
    click.echo(database.resolve_url(_config()))


@main.command()
@friendly
def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    url = database.resolve_url(_config())
    database.migrate(url)
    console.print(f"database {database.describe_url(url)} at revision {database.head_revision()}",
                  highlight=False)


# -- sources ----------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.pass_context
@friendly
def sources(ctx: click.Context) -> None:
    """List the sources (same as `harvest sources list`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(sources_list)


@sources.command("list")
@click.pass_context
@friendly
def sources_list(ctx: click.Context) -> None:
    """List sources with their last success and failures (when the database runs)."""
    parsed = _load(ctx)
    states: dict[str, dict[str, Any]] = {}
    moved: dict[str, tuple[datetime, dict[str, str]]] = {}
    try:
        with _connect(start=False) as conn:
            states = queries.source_states(conn)
            moved = queries.moved_urls(conn, {s.name: s.urls for s in parsed.sources})
    except (database.DatabaseUnavailable, psycopg.Error) as exc:
        # Listing works without a database, but a disabled source would show as enabled:
        # say why the health columns are empty.
        err.print(f"[yellow]warning:[/] no source health shown: {shown(first_line(exc))}",
                  highlight=False)
    config = _config()
    table = Table(title=f"sources ({_sources_path(ctx)})", title_justify="left")
    for col in ("name", "kind", "status", "weight", "interval", "last success", "failures",
                "last error"):
        table.add_column(col, overflow="fold")
    disabled: list[str] = []
    for s in parsed.sources:
        state = states.get(s.name, {})
        last = state.get("last_success")
        if state.get("disabled"):
            status = "[red]disabled[/] (failing)"
            disabled.append(s.name)
        elif not config.kind_enabled(s.kind):
            status = f"off (HARVEST_{s.kind.upper()}_ENABLED)"
        else:
            status = "enabled" if s.enabled else "off (sources file)"
        # Also after a partly failed run (no failure, but a URL or page that failed).
        error = state.get("last_error")
        table.add_row(s.name, s.kind, status, f"{s.weight:g}",
                      f"cron {s.cron}" if s.cron else s.interval,
                      table_time(last),
                      str(state.get("consecutive_failures", "-")),
                      # Whole words: a cut mid-word hid the advice at the end. A server's
                      # text: no markup ("Forbidden [/]" crashed this), no control codes.
                      shown(textwrap.shorten(error, 240, placeholder=" …")) if error else "-")
    console.print(table)
    for name in disabled:
        console.print(f"[red]{name}[/] was disabled after failing "
                      f"{states[name]['consecutive_failures']} runs in a row; after fixing the "
                      f"cause run `harvest sources enable {name}`", highlight=False)
    for name, (when, urls) in moved.items():
        # Shown until the file no longer lists the old URL (or a run no longer sees it).
        for old_url, new_url in urls.items():
            console.print(f"[yellow]moved[/] {escape(moved_message(name, old_url, new_url))} "
                          f"(run of {when:%Y-%m-%d %H:%M})", highlight=False)


@sources.command("enable")
@click.argument("name")
@click.pass_context
@friendly
def sources_enable(ctx: click.Context, name: str) -> None:
    """Re-enable a source that was disabled after failing too often."""
    _load(ctx).get(name)  # an unknown name is an error, not a silent no-op
    with _connect() as conn:
        changed = state.enable(conn, name)
    if changed:
        console.print(f"{name}: enabled again; its failure count starts from zero",
                      highlight=False)
    else:
        console.print(f"{name}: was not disabled; nothing to do", highlight=False)


@sources.command("check")
@click.pass_context
@friendly
def sources_check(ctx: click.Context) -> None:
    """Validate the sources file; exit 2 with the reason when it is wrong (a URL listed
    twice is a warning)."""
    parsed = _load(ctx)
    console.print(f"{_sources_path(ctx)}: OK, {len(parsed.sources)} sources "
                  f"({len(parsed.enabled())} enabled), {len(parsed.topics)} topics",
                  highlight=False)
    listed: dict[str, list[str]] = {}
    for source in parsed.sources:
        for url in source.urls:
            listed.setdefault(safe_url_string(url), []).append(source.name)
    for url, names in listed.items():
        if len(set(names)) == 1 and len(names) > 1:
            err.print(f"[yellow]warning:[/] {escape(url)} is listed twice by {names[0]}: it is "
                      "fetched twice in every run and its items counted as duplicates",
                      highlight=False)
        elif len(names) > 1:
            err.print(f"[yellow]warning:[/] {escape(url)} is listed by "
                      f"{', '.join(dict.fromkeys(names))}: each fetches it, and its items are "
                      "stored once and counted as re-seen by the others", highlight=False)


# -- crawling ---------------------------------------------------------------------------


def _parse_set(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="-s")
        if why := setting_values.refused(key, val):
            raise click.BadParameter(why, param_hint="-s")
        out[key] = val
    return out


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Crawl every enabled source.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Override a Scrapy setting (repeatable).")
@click.option("-v", "--verbose", is_flag=True, help="Show Scrapy's log instead of a log file.")
@click.option("--progress/--no-progress", default=None,
              help="Live progress table (default: only on a terminal).")
@click.pass_context
@friendly
def crawl(ctx: click.Context, names: tuple[str, ...], all_: bool, overrides: tuple[str, ...],
          verbose: bool, progress: bool | None) -> None:
    """Crawl the named sources (or --all enabled ones) and print a summary per source.

    Exit status: 0 when every source was reached (a source switched off or without
    credentials is skipped); 1 when a source failed (nothing usable came back, or our code
    raised on it), is disabled after failing (`harvest sources enable NAME`), could not run
    (a -s setting refused) or lost items (neither the database nor the spool took them), or
    when the crawl was interrupted (Ctrl-C, SIGTERM, a hangup); 2 when the crawl could not
    start (bad sources file, unknown source). With the database down the crawl still runs
    and spools its items.
    """
    outcomes = run_crawl_command(ctx, names, all_, _parse_set(overrides), verbose, progress)
    if any(o.failed for o in outcomes):
        sys.exit(EXIT_FAILED)


def run_crawl_command(ctx: click.Context, names: tuple[str, ...], all_: bool,
                      overrides: dict[str, str], verbose: bool,
                      progress: bool | None = None) -> list[Any]:
    from harvester import ui
    from harvester.runner import crawl_settings, run_crawls

    parsed = _load(ctx)
    if all_ == bool(names):
        raise click.UsageError("name the sources to crawl, or pass --all (not both)")
    chosen = parsed.enabled() if all_ else [parsed.get(n) for n in names]
    if not chosen:
        raise click.UsageError("no enabled sources in the sources file")
    cfg = _config()
    spool_dir = overrides.get("HARVEST_STORE_SPOOL_DIR")
    replay_command = f"harvest replay --dir {shlex.quote(spool_dir)}" if spool_dir else \
        "harvest replay"
    try:
        database.ensure_schema(database.resolve_url(cfg))
    except (database.DatabaseUnavailable, psycopg.OperationalError) as exc:
        # Crawling still makes sense: every batch is spooled and `harvest replay` (or the
        # next crawl) stores it once the database is back.
        first = first_line(exc)
        err.print(f"[yellow]warning:[/] the database is unreachable ({shown(first)}); crawling "
                  f"anyway, items go to {spool_dir or cfg.spool_dir} until "
                  f"`{replay_command}`.", highlight=False)
    log_file = None
    if not verbose:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        log_file = cfg.home.absolute() / "logs" / f"crawl-{stamp}-{os.getpid()}.log"
        if _room(log_file.parent) < LOG_ROOM_BYTES:
            # Scrapy's log handler failed on the full disk as each crawler started (its
            # close flushes): the crawl died with "No space left on device".
            err.print(f"[yellow]warning:[/] {escape(str(log_file.parent))} has no room for "
                      "the crawl's log; it is not kept this time (free space there).",
                      highlight=False)
            log_file = Path(os.devnull)
    settings = crawl_settings(
        {"HARVEST_SOURCES_FILE": str(_sources_path(ctx)), **overrides}, log_file
    )
    live: Live | None = None

    def on_start(get_rows: Callable[[], dict[str, dict[str, Any]]]) -> None:
        nonlocal live
        if progress or (progress is None and console.is_terminal and not verbose):
            live = Live(get_renderable=ui.live_view(get_rows), console=console,
                        refresh_per_second=4, transient=True)
            live.start()

    try:
        outcomes = run_crawls(chosen, settings, on_start)
    finally:
        if live is not None:
            live.stop()
    ui.summary(console, outcomes, replay_command)
    if log_file is not None and log_file != Path(os.devnull):
        console.print(f"log: {log_file}", highlight=False, style="dim")
    return outcomes


#: Free space a crawl's log file needs to be kept (a crawl writes a few hundred KB).
LOG_ROOM_BYTES = 4 * 2**20


def _room(directory: Path) -> int:
    """Free bytes where ``directory`` is (or would be created)."""
    for path in (directory, *directory.parents):
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return LOG_ROOM_BYTES
    return LOG_ROOM_BYTES


# -- reading ----------------------------------------------------------------------------


class _Score(click.ParamType):
    """A number (``nan`` and ``inf`` are floats to Python, and no score)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


_SCORE = _Score()


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return ago(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an age like 24h/7d nor an ISO date", param_hint="--since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _check_sources(ctx: click.Context, conn: psycopg.Connection[Any],
                   names: tuple[str, ...]) -> None:
    """A ``--source`` that the sources file does not define and no stored signal or
    rejection carries is a misspelt name, not an empty answer (a source removed from the
    file still counts while its rows are kept)."""
    if not names:
        return
    unreadable = None
    try:
        defined = {s.name for s in _load(ctx).sources}
    except SourcesError as exc:
        defined, unreadable = set(), exc
    stored = {row[0] for row in conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name"
        " WHERE EXISTS (SELECT 1 FROM signals WHERE source = name)"
        " OR EXISTS (SELECT 1 FROM rejects WHERE source = name)", [list(names)])}
    unknown = [n for n in names if n not in defined and n not in stored]
    if unknown and unreadable is not None:
        # "(it defines none)" of a file that could not be read at all.
        raise SourcesError(f"unknown source {unknown[0]!r}: no stored row carries it, and "
                           f"the sources file cannot be read to say more ({unreadable})")
    if unknown:
        known = ", ".join(sorted(defined)) or "none"
        raise SourcesError(f"unknown source {unknown[0]!r}: no stored row carries it and "
                           f"the sources file does not define it (it defines {known})")


def _show_rows(ctx: click.Context, sources: tuple[str, ...],
               fetch: Callable[[psycopg.Connection[Any]], list[dict[str, Any]]],
               table: str, as_json: bool) -> None:
    """Rows read for ``--source`` names that must exist, as a JSON array or the ``ui``
    table named ``table``."""
    with _connect() as conn:
        _check_sources(ctx, conn, sources)
        rows = fetch(conn)
    if as_json:
        click.echo(json.dumps(rows, default=_json_default, ensure_ascii=not utf8_output(),
                               indent=2))
        return
    from harvester import ui

    console.print(getattr(ui, table)(rows))


@main.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--since", default=None, help="Only signals newer than an age (24h, 7d) or date.")
@click.option("--source", "sources", multiple=True, help="Only this source (repeatable).")
@click.option("--min-score", default=None, type=_SCORE,
              help="Only signals scoring at least this.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
@friendly
def top(ctx: click.Context, limit: int, since: str | None, sources: tuple[str, ...],
        min_score: float | None, as_json: bool) -> None:
    """The highest-scoring signals, with why they scored."""
    flt = queries.TopFilter(limit=limit, since=_since(since), sources=sources,
                            min_score=min_score)
    _show_rows(ctx, sources, lambda conn: clustered.top_clusters(conn, flt), "top_table",
               as_json)


@main.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--since", default=None, help="Only rejections newer than an age (24h, 7d) or date.")
@click.option("--source", "sources", multiple=True, help="Only this source (repeatable).")
@click.option("--reason", "reasons", multiple=True,
              help="Only this reason, e.g. missing_link_and_id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with the raw input.")
@click.pass_context
@friendly
def rejects(ctx: click.Context, limit: int, since: str | None, sources: tuple[str, ...],
            reasons: tuple[str, ...], as_json: bool) -> None:
    """The newest rejections: what could not become a signal, and why."""
    flt = queries.RejectFilter(limit=limit, since=_since(since), sources=sources,
                               reasons=reasons)
    stored: list[str] = []

    def fetch(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
        rows = queries.rejects(conn, flt)
        if not rows and reasons:
            stored.extend(r for (r,) in conn.execute(
                "SELECT DISTINCT reason FROM rejects ORDER BY reason"))
        return rows

    _show_rows(ctx, sources, fetch, "rejects_table", as_json)
    unknown = [r for r in reasons if r not in stored]
    if stored and unknown:  # a misspelt reason reads like "no such rejections"
        err.print(f"no stored rejection has the reason {unknown[0]!r}; the stored reasons are "
                  f"{', '.join(stored)}", highlight=False, markup=False)


@main.command()
@click.option("--retry-refused", is_flag=True,
              help="First put back the files set aside as .refused (after fixing the cause).")
@click.option("--dir", "spool_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The spool directory: a crawl's HARVEST_STORE_SPOOL_DIR "
                   "(default: $HARVEST_HOME/spool).")
@friendly
def replay(retry_refused: bool, spool_dir: Path | None) -> None:
    """Store batches spooled while the database was unreachable (each exactly once).

    A batch the database refuses is set aside as .refused and the others go on; exit 1
    when one was refused or unreadable.
    """
    # Here, not at the top: it brings the store and numpy, which other commands do not need.
    from harvester.services.replay import put_back_refused, replay_pending

    cfg = _config()
    spool_dir = spool_dir or cfg.spool_dir
    again = " --dir " + shlex.quote(str(spool_dir)) if spool_dir != cfg.spool_dir else ""
    if retry_refused:
        console.print(f"{put_back_refused(spool_dir)} refused files put back",
                      highlight=False)
    pending = spool.pending(spool_dir)
    if not pending and not spool.partial(spool_dir):
        console.print(f"nothing to replay in {spool_dir}", highlight=False)
        aside = spool.set_aside(spool_dir)
        if aside["refused"] or aside["unreadable"]:  # still not stored: not a clean spool
            err.print(f"[red]set aside in {escape(str(spool_dir))}: {aside['refused']} "
                      f"refused, {aside['unreadable']} unreadable files[/]; "
                      f"`harvest replay --retry-refused{again}` takes the refused back once "
                      "their cause is fixed, and a mended .bad file renamed .jsonl",
                      highlight=False)
            sys.exit(EXIT_FAILED)
        return
    if not os.access(spool_dir, os.W_OK):
        # Each file is removed once stored: on a read-only mount the replay stored one
        # batch and then failed, and logged files "renamed to .bad" that were not.
        err.print(f"[red]error:[/] cannot replay {escape(str(spool_dir))}: the directory is "
                  "not writable, and a replay removes each file it stores; make it "
                  "writable, or copy the files to a directory that is and `harvest replay "
                  "--dir` there", highlight=False)
        sys.exit(EXIT_USAGE)
    url = database.resolve_url(cfg)
    database.ensure_schema(url)

    async def run() -> Any:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            return await replay_pending(conn, spool_dir)

    report = asyncio.run(run())
    console.print(f"replayed {report.batches} batches: {report.signals} signals "
                  f"({report.new} new), {report.rejects} rejections, "
                  f"{report.already_applied} already applied")
    for refused in report.refused:
        err.print(f"[red]refused[/] {escape(refused)}", highlight=False)
    if report.refused:
        err.print(f"[red]{len(report.refused)} spool files were refused and renamed .refused[/]"
                  f"; fix the cause, then `harvest replay --retry-refused{again}`")
    if report.unreadable:
        err.print(f"[red]{report.unreadable} spool files were unreadable and renamed .bad[/]"
                  ": their items are not stored; mend each at the line named above and "
                  f"rename it back to .jsonl, then run `harvest replay{again}`",
                  highlight=False)
    if report.refused or report.unreadable:
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10000),
              help="How many top signals to show.")
@click.pass_context
@friendly
def demo(ctx: click.Context, limit: int) -> None:
    """Crawl the bundled demo site, served on 127.0.0.1, and show the top signals."""
    import tempfile

    from harvester.demo import render_site
    from harvester.services.localsite import LocalSite

    with tempfile.TemporaryDirectory(prefix="harvest-demo-") as tmp:
        site_dir = Path(tmp) / "site"
        site_dir.mkdir()
        with LocalSite(site_dir) as site:
            sources_file = render_site(site_dir, site.url)
            console.print(f"demo site serving {site_dir} at {site.url}", highlight=False)
            ctx.obj["sources"] = sources_file
            outcomes = run_crawl_command(ctx, (), True, {}, False)
    demo_sources = tuple(o.source for o in outcomes)
    ctx.invoke(top, limit=limit, since=None, sources=demo_sources, min_score=None, as_json=False)
    if any(o.failed for o in outcomes):
        sys.exit(EXIT_FAILED)


# Command groups kept in their own modules register themselves on `main`.
from harvester import (  # noqa: E402, F401
    cli_brief,
    cli_jobs,
    cli_notify,
    cli_ops,
    cli_score,
    cli_scrapyd,
    cli_serve,
)

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Run as `python -m harvester.cli`, this file is `__main__`; the command modules
    # registered themselves on `harvester.cli.main`, so that is the one to run.
    from harvester.cli import main as registered

    registered()
