"""``harvest notify``: announce high-scoring signals and ops alerts on the configured
channels (Slack, Telegram, a webhook), each once; see docs/alerts.md."""

from __future__ import annotations

import math
import sys
from collections import Counter

import click
import psycopg

from harvester.cli import EXIT_FAILED, EXIT_USAGE, _load, console, err, friendly, main
from harvester.config import get_config
from harvester.messages import printable, printable_lines, shown
from harvester.services import database
from harvester.services.alerts import messages
from harvester.services.alerts.channels import build_channels
from harvester.services.alerts.config import AlertsConfigError, load_alerts_config
from harvester.services.alerts.notify import NotifyResult, notify
from harvester.sources import Source, SourcesError

NO_CHANNEL = ("no alert channel configured (set HARVEST_SLACK_WEBHOOK_URL, "
              "HARVEST_TELEGRAM_BOT_TOKEN and HARVEST_TELEGRAM_CHAT_ID, or HARVEST_WEBHOOK_URL)")


def _sources(ctx: click.Context) -> list[Source] | None:
    """Enabled sources, or None (with a warning) when the file cannot be read: signal alerts
    and run alerts still work, staleness needs the intervals."""
    try:
        parsed = _load(ctx)
    except SourcesError as exc:
        err.print(f"[yellow]warning:[/] {shown(exc)} — stale sources are not checked this "
                  "time.",
                  highlight=False)
        return None
    return get_config().crawled(parsed.sources)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _print_dry_run(result: NotifyResult) -> None:
    where = ", ".join(result.channels) if result.channels else "no channel configured"
    console.print(f"dry run: nothing recorded, nothing sent ({where})", highlight=False)
    for payload in result.signals:
        console.print("would send:\n" + _indent(printable_lines(messages.plain(payload))),
                      highlight=False,
                      markup=False)
    for change in result.changes:
        console.print(f"would send: {printable(messages.plain(change.payload))}",
                      highlight=False,
                      markup=False)
    if not result.signals and not result.changes:
        console.print("nothing new to announce", highlight=False)


def _print_changes(result: NotifyResult) -> None:
    for change in result.changes:
        console.print(f"ops alert {change.event}: {printable(change.payload['text'])}",
                      highlight=False, markup=False)


def _print_delivery(result: NotifyResult) -> bool:
    """Print what was sent, deferred and given up; True when something was given up."""
    report = result.delivery
    assert report is not None
    for sent in report.sent:
        console.print(f"sent to {sent.channel}: {printable(sent.summary)}", highlight=False,
                      markup=False)
    per_channel = Counter(s.channel for s in report.sent)
    detail = ", ".join(f"{ch} {n}" for ch, n in sorted(per_channel.items()))
    console.print(f"{len(result.signals)} new signal alerts, {len(result.changes)} ops changes;"
                  f" {len(report.sent)} messages sent" + (f" ({detail})" if detail else ""),
                  highlight=False)
    if report.deferred:
        waiting = ", ".join(f"{ch} in {math.ceil(s)} s" if s >= 0.5 else f"{ch} now"
                            for ch, s in sorted(report.deferred.items()))
        console.print(f"retries left for the next `harvest notify`: {waiting}",
                      highlight=False)
    for channel, n in sorted(report.held_back.items()):
        console.print(f"{channel} failed, so its {n} other message{'s' if n != 1 else ''} "
                      f"wait{'s' if n == 1 else ''} for the next `harvest notify`",
                      highlight=False)
    for given in report.given_up:
        tries = f"{given.attempts} attempt" + ("s" if given.attempts != 1 else "")
        err.print(f"given up: {printable(given.summary)} on {given.channel} after {tries}: "
                  f"{printable(given.error)}", highlight=False, markup=False)
    return bool(report.given_up)


def _run(ctx: click.Context, threshold: float, limit: int, dry_run: bool,
         with_ops: bool) -> NotifyResult:
    try:
        cfg = load_alerts_config()
    except AlertsConfigError as exc:
        err.print(f"[red]error:[/] {shown(exc)}", highlight=False)
        sys.exit(EXIT_USAGE)
    sources = _sources(ctx) if with_ops else []
    channels = build_channels(cfg)
    url = database.resolve_url(get_config())
    database.ensure_schema(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            return notify(conn, cfg, channels, threshold=threshold, limit=limit,
                          sources=sources, with_ops=with_ops, dry_run=dry_run)
    finally:
        for channel in channels.values():
            channel.close()


@main.command("notify")
@click.option("--threshold", default=80.0, show_default=True, type=click.FloatRange(0, 100),
              help="Announce signals scoring at least this.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="At most this many new signals per run (retries are not counted).")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; record nothing.")
@click.option("--ops/--no-ops", "with_ops", default=True, show_default=True,
              help="Also open and resolve ops alerts (failed runs, stale sources, rejects).")
@click.pass_context
@friendly
def notify_command(ctx: click.Context, threshold: float, limit: int, dry_run: bool,
                   with_ops: bool) -> None:
    """Announce new high-scoring signals and ops alerts, each once per channel.

    Failed sends are retried with backoff (a 429's Retry-After is waited out) in this run
    and later ones; exit status 1 when a message was given up."""
    result = _run(ctx, threshold, limit, dry_run, with_ops)
    if dry_run:
        _print_dry_run(result)
        return
    _print_changes(result)
    for channel, n in result.unconfigured.items():
        console.print(f"{n} message{'s' if n != 1 else ''} wait{'s' if n == 1 else ''} for "
                      f"{channel}, which is not configured now: sent when it is configured "
                      "again", highlight=False)
    if not result.channels:
        console.print(f"{NO_CHANNEL}: {result.recorded} alerts recorded, none sent",
                      highlight=False)
        return
    if _print_delivery(result):
        sys.exit(EXIT_FAILED)
