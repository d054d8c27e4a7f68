"""``harvest verify|stats|snapshot|prune|retain|archive|backup|restore``: operating the data.

Thin: parse arguments, call ``harvester.services.ops``, render. Files go under
``$HARVEST_HOME/snapshots``, ``/archives`` and ``/backups`` unless ``--dir`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from rich.markup import escape
from rich.table import Table

from harvester import demo, messages
from harvester.cli import (
    EXIT_FAILED,
    EXIT_USAGE,
    F,
    _json_default,
    _load,
    console,
    err,
    friendly,
    main,
)
from harvester.config import get_config
from harvester.messages import shown, table_time, utc_time
from harvester.migrations import HEAD, schema_advice, schema_newer
from harvester.services import database, queries
from harvester.services.ops import (
    OpsError,
    archive,
    backup,
    files,
    merge,
    prune,
    retention,
    snapshot,
    stats,
    verify,
)
from harvester.sources import SourcesError, ago


def _ops(func: F) -> F:
    """An ``OpsError`` (a refusal the operator can act on) is one red sentence, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OpsError as exc:
            err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def _url(migrate: bool = True) -> str:
    url = database.resolve_url(get_config())
    if migrate:
        database.ensure_schema(url)
    return url


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _dir(given: Path | None, kind: str) -> Path:
    return given.absolute() if given else files.default_dir(get_config().home, kind)


def _cutoff(value: str, hint: str) -> datetime:
    try:
        return ago(value)  # one reaching back before year 1 keeps (or archives) everything
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an age like 30d or 12h",
                                 param_hint=hint) from None


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _when(value: Any) -> str:
    """A time in a sentence: with its year, unlike a table's (a cut-off is a date to act on)."""
    return utc_time(value)


def _merged(what: str, path: Path, result: merge.MergeResult) -> None:
    console.print(f"restored {result.inserted} of {result.rows} signals from {what} {path} "
                  f"({result.present} were already stored and left as they are"
                  + (f", {result.renumbered} got new ids" if result.renumbered else "") + ")",
                  highlight=False)


# -- verify and stats -------------------------------------------------------------------


@main.command("verify")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
@friendly
def verify_command(ctx: click.Context, strict: bool, as_json: bool) -> None:
    """Check the database's integrity and consistency; exit 1 listing the problems.

    Schema at head, id sequences, signal counters, references between tables, B-tree
    indexes (amcheck, where available), the spool and the sources file. Does not migrate.
    """
    try:
        # The demo's sources too: `harvest demo` shares the database (README).
        names: set[str] | None = {s.name for s in _load(ctx).sources} | demo.source_names()
    except SourcesError:
        names = None
    with _connect(_url(migrate=False)) as conn:
        findings = verify.run_all(conn, head=HEAD, spool_dir=get_config().spool_dir,
                                  source_names=names)
    failing = {"problem", "warning"} if strict else {"problem"}
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
    else:
        style = {"problem": "[red]problem[/]", "warning": "[yellow]warning[/]",
                 "ok": "[green]ok[/]"}
        for f in findings:
            console.print(f"{style[f.level]} {f.check}: {shown(f.message)}", highlight=False)
    bad = Counter(f.level for f in findings if f.level in failing)
    if bad:
        found = " and ".join(f"{n} {level}(s)" for level, n in sorted(bad.items()))
        err.print(f"[red]{found} found[/]" + (" (--strict)" if bad["warning"] else ""),
                  highlight=False)
        sys.exit(EXIT_FAILED)


@main.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@friendly
def stats_command(as_json: bool) -> None:
    """Totals, per-source detail, rejections, recent runs, database size, data age."""
    with _connect(_url()) as conn:
        data = stats.collect(conn, get_config().spool_dir)
        runs = queries.recent_runs(conn, 5)
    if as_json:
        click.echo(json.dumps(data, default=_json_default, indent=2))
        return
    console.print(f"signals: {data['signals']}   runs: {data['runs']}   "
                  f"spooled batches: {data['spooled_batches']}   "
                  f"set aside: {sum(data['spool_set_aside'].values())}   "
                  f"database: {_size(data['database_size_bytes'])}   "
                  f"oldest: {table_time(data['oldest_signal'])}   "
                  f"newest: {table_time(data['newest_signal'])}", highlight=False)
    table = Table(title="sources", title_justify="left")
    for col in ("source", "signals", "rejects", "first seen", "last run", "outcome",
                "last success"):
        table.add_column(col, justify="right" if col in ("signals", "rejects") else "left")
    for name, s in data["sources"].items():
        table.add_row(name + (" (disabled)" if s["disabled"] else ""), str(s["signals"]),
                      str(s["rejects"]),
                      f"{table_time(s['oldest'])} … {table_time(s['newest'])}",
                      table_time(s["last_run_started_at"]), s["last_run_outcome"] or "-",
                      table_time(s["last_success"]))
    console.print(table)
    for name, s in data["sources"].items():
        if s["last_run_dropped_fields"]:
            fields = ", ".join(f"{f} ×{n}" for f, n in sorted(s["last_run_dropped_fields"].items()))
            console.print(f"[yellow]fields dropped[/] by {name}'s last run: {fields}",
                          highlight=False)
        for old_url, new_url in sorted(s["last_run_moved"].items()):
            console.print(f"[yellow]moved[/] {escape(messages.moved(name, old_url, new_url))} "
                          "(last run)", highlight=False)
    table = Table(title="rejects by reason", title_justify="left")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, count in data["rejects"].items():
        table.add_row(reason, str(count))
    console.print(table)
    table = Table(title="recent runs", title_justify="left")
    for col in ("started", "sources", "outcome", "scraped", "new", "re-seen", "rejected",
                "errors", "304s"):
        table.add_column(col)
    for r in runs:
        table.add_row(table_time(r["started_at"], seconds=True), ",".join(r["sources"]),
                      _run_outcome(r), *(str(r[k]) for k in (
                          "scraped", "stored", "reseen", "rejected", "errors", "not_modified")))
    console.print(table)


def _run_outcome(run: dict[str, Any]) -> str:
    """What became of a run's sources ("succeeded", "skipped", "2 succeeded, 1 failed");
    the finish reason of a run that names none."""
    counted = Counter(run["outcomes"] or [])
    if not counted:
        return run["finish_reason"] or "-"
    if len(counted) == 1:
        return next(iter(counted))
    return ", ".join(f"{n} {outcome}" for outcome, n in counted.most_common())


# -- snapshots, prune, retain -----------------------------------------------------------


def _group(name: str, help_text: str) -> Callable[[F], click.Group]:
    def decorate(func: F) -> click.Group:
        return main.group(name, invoke_without_command=True, help=help_text)(func)
    return decorate


@_group("snapshot", "Export every signal to NDJSON with a manifest (`snapshot restore FILE` "
        "puts them back).")
@click.option("--gzip", "compress", is_flag=True, help="Compress the file (.ndjson.gz).")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write (default $HARVEST_HOME/snapshots).")
@click.pass_context
@friendly
@_ops
def snapshot_group(ctx: click.Context, compress: bool, directory: Path | None) -> None:
    if ctx.invoked_subcommand is not None:
        return
    with _connect(_url()) as conn:
        manifest = snapshot.take(conn, _dir(directory, "snapshots"), compress=compress,
                                 schema_revision=HEAD)
    path = _dir(directory, "snapshots") / manifest["file"]
    console.print(f"snapshot of {manifest['rows']} signals: {path} ({_size(manifest['bytes'])}, "
                  f"sha256 {manifest['sha256'][:16]}…)", highlight=False)


@snapshot_group.command("restore")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
@_ops
def snapshot_restore(file: Path) -> None:
    """Put back the signals of a snapshot that are missing (checksum checked first)."""
    with _connect(_url()) as conn:
        result = snapshot.restore(conn, file)
    _merged("snapshot", file, result)


@main.command("prune")
@click.option("--keep", required=True, type=click.IntRange(min=1),
              help="How many of the newest snapshots to keep.")
@click.option("--backups", is_flag=True, help="Prune backups instead of snapshots.")
@click.option("--dir", "directory", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The directory (default $HARVEST_HOME/snapshots or /backups).")
@click.option("--force", is_flag=True, help="Delete; without it, only say what would go.")
@friendly
@_ops
def prune_command(keep: int, backups: bool, directory: Path | None, force: bool) -> None:
    """Delete all but the newest N snapshot files (signals are not touched; see `retain`)."""
    kind, folder = ("backup", "backups") if backups else ("snapshot", "snapshots")
    where = _dir(directory, folder)
    pruning = prune.plan(where, keep, kind)
    verb = "deleting" if force else "would delete"
    for _mpath, manifest in pruning.delete:
        console.print(f"{verb} {manifest['file']} ({manifest.get('created_at', '?')})",
                      highlight=False)
    for path in pruning.unfinished:
        console.print(f"[yellow]left alone[/] {path.name}: no manifest names it (an "
                      "interrupted export, or not ours)", highlight=False)
    for mpath, why in pruning.broken:
        console.print(f"[yellow]left alone, not counted[/] {mpath.name}: {why}",
                      highlight=False)
    if not pruning.delete:
        console.print(f"nothing to prune: {len(pruning.keep)} {kind}s in {where}, keeping "
                      f"{keep}", highlight=False)
        return
    if not force:
        console.print(f"{len(pruning.delete)} {kind}s would be deleted, {len(pruning.keep)} "
                      "kept; add --force to delete them", highlight=False)
        return
    freed = prune.apply(pruning)
    console.print(f"deleted {len(pruning.delete)} {kind}s ({_size(freed)}), kept "
                  f"{len(pruning.keep)}", highlight=False)


@main.command("retain")
@click.option("--keep-age", required=True, metavar="AGE",
              help="Keep signals seen within this age (30d, 12h); delete older ones.")
@click.option("--force", is_flag=True, help="Delete; without it, only say what would go.")
@friendly
@_ops
def retain_command(keep_age: str, force: bool) -> None:
    """Delete signals not seen (last_seen) for longer than AGE; a dry run without --force."""
    cutoff = _cutoff(keep_age, "--keep-age")
    with _connect(_url()) as conn:
        preview = retention.preview(conn, cutoff)
        if not preview["total"]:
            console.print(f"no signal was last seen before {_when(cutoff)}: nothing to delete",
                          highlight=False)
            return
        for source, count in preview["by_source"].items():
            console.print(f"  {source}: {count}", highlight=False)
        if not force:
            console.print(f"{preview['total']} signals were last seen before {_when(cutoff)} "
                          "and would be deleted; add --force to delete them (`harvest archive "
                          f"--older-than {keep_age}` keeps a copy)", highlight=False)
            return
        report = retention.retain(conn, cutoff)
    _deleted(report, cutoff)


def _deleted(report: retention.DeleteReport, cutoff: datetime) -> None:
    console.print(f"deleted {report.deleted} signals last seen before {_when(cutoff)} in "
                  f"{report.batches} batches of up to {retention.BATCH}"
                  + (", then VACUUM" if report.deleted else "")
                  + (f"; {report.kept_reseen} seen again meanwhile were kept"
                     if report.kept_reseen else "")
                  + (f"; {report.rescored} signals rescored: their clusters lost a source"
                     if report.rescored else ""), highlight=False)


# -- archives ---------------------------------------------------------------------------


@_group("archive", "Move signals older than an age out of the database into CSV (`archive "
        "restore FILE` brings them back).")
@click.option("--older-than", "older_than", metavar="AGE",
              help="Archive signals last seen longer ago than this (45d).")
@click.option("--gzip", "compress", is_flag=True, help="Compress the file (.csv.gz).")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write (default $HARVEST_HOME/archives).")
@click.option("--dry-run", is_flag=True, help="Only say how many signals would be archived.")
@click.pass_context
@friendly
@_ops
def archive_group(ctx: click.Context, older_than: str | None, compress: bool,
                  directory: Path | None, dry_run: bool) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if older_than is None:
        raise click.UsageError("say which signals to archive: --older-than AGE (e.g. 45d)")
    cutoff = _cutoff(older_than, "--older-than")
    with _connect(_url()) as conn:
        if dry_run:
            preview = retention.preview(conn, cutoff)
            console.print(f"{preview['total']} signals were last seen before {_when(cutoff)} "
                          "and would be archived", highlight=False)
            return
        report = archive.archive(conn, _dir(directory, "archives"), cutoff, compress=compress,
                                 schema_revision=HEAD)
    if report is None:
        console.print(f"no signal was last seen before {_when(cutoff)}: nothing to archive",
                      highlight=False)
        return
    console.print(f"archived {report.manifest['rows']} signals: {report.path} "
                  f"({_size(report.manifest['bytes'])}, sha256 "
                  f"{report.manifest['sha256'][:16]}…)", highlight=False)
    _deleted(report.deleted, cutoff)


@archive_group.command("restore")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
@_ops
def archive_restore(file: Path) -> None:
    """Put back archived signals that are missing (checksum checked first)."""
    with _connect(_url()) as conn:
        result = archive.restore(conn, file)
    _merged("archive", file, result)


# -- backups ----------------------------------------------------------------------------


def _compare(comparison: backup.Comparison, what: str) -> None:
    if comparison.differences:
        for table, expected, found in comparison.differences:
            err.print(f"[red]mismatch[/] {table}: {expected} rows in the backup, {found} "
                      f"{what}", highlight=False)
        sys.exit(EXIT_FAILED)
    console.print(f"row counts match in all {len(comparison.expected)} tables "
                  f"({sum(comparison.expected.values())} rows)", highlight=False)


@_group("backup", "Back up the whole database (pg_dump -Fc) with a manifest; `--verify` "
        "test-restores it.")
@click.option("--verify", "check", is_flag=True,
              help="Restore the new backup into a scratch database and compare row counts.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write (default $HARVEST_HOME/backups).")
@click.pass_context
@friendly
@_ops
def backup_group(ctx: click.Context, check: bool, directory: Path | None) -> None:
    if ctx.invoked_subcommand is not None:
        return
    url = _url()
    with _connect(url) as conn:
        manifest = backup.take(conn, url, _dir(directory, "backups"), schema_revision=HEAD)
        path = _dir(directory, "backups") / manifest["file"]
        console.print(f"backup of {database.describe_url(url)}: {path} "
                      f"({_size(manifest['bytes'])}, {manifest['rows']} rows in "
                      f"{len(manifest['tables'])} tables)", highlight=False)
        if check:
            _compare(backup.verify(conn, url, path), "after a test restore")


@backup_group.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@friendly
@_ops
def backup_verify(file: Path) -> None:
    """Restore an existing backup into a scratch database and compare row counts."""
    url = _url(migrate=False)
    with _connect(url) as conn:
        _compare(backup.verify(conn, url, file), "after a test restore")


@main.command("restore")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that holds data.")
@friendly
@_ops
def restore_command(file: Path, force: bool) -> None:
    """Replace the configured database's contents with a backup (one transaction)."""
    url = _url(migrate=False)
    with _connect(url) as conn:
        held = backup.stored_rows(conn)
    if held and not force:
        raise OpsError(f"{database.describe_url(url)} holds {held} rows and restoring replaces "
                       "all of them; add --force (and consider `harvest backup` first)")
    comparison = backup.restore(url, file)
    console.print(f"restored {file} into {database.describe_url(url)}", highlight=False)
    _compare(comparison, "after the restore")
    revision = database.current_revision(url)
    if schema_newer(revision):  # a manifest without its revision (written by hand)
        console.print(f"[yellow]{escape(schema_advice(revision))}[/]", highlight=False)
    elif revision != HEAD:
        console.print(f"the backup's schema is at {revision}; the next harvest command "
                      f"migrates it to {HEAD} (or run `harvest migrate`)", highlight=False)
