"""``harvest explain`` (a signal's score in words) and ``harvest rescore`` (recompute scores
after a change of topics or weights, without re-crawling)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import psycopg

from harvester import settings as project_settings
from harvester.cli import (
    _SCORE,
    EXIT_USAGE,
    _check_sources,
    _config,
    _connect,
    _json_default,
    _load,
    _since,
    console,
    err,
    friendly,
    main,
)
from harvester.messages import shown, utf8_output
from harvester.services import database
from harvester.services.rescore import RescoreReport, rescore
from harvester.services.scoring import HALF_LIFE_MAX, SCORING_VERSION
from harvester.services.urls import canonical_url, url_key

_COLUMNS = "id, source, title, url, score, score_breakdown, published_at, last_seen"


def _find(conn: Any, ref: str) -> dict[str, Any] | None:
    """The signal with this id, or whose URL (as given or canonical) or link is ``ref``."""
    cur = conn.cursor()
    if ref.isascii() and ref.isdigit():  # not "²", which isdigit() takes for a digit
        if len(ref) > 18:  # beyond bigint: no such id
            return None
        cur.execute(f"SELECT {_COLUMNS} FROM signals WHERE id = %s", (int(ref),))
    else:
        try:
            key: str | None = url_key(canonical_url(ref))
        except ValueError:  # "http://[::1", a port that is no number: no stored URL
            key = None
        cur.execute(
            f"SELECT {_COLUMNS} FROM signals WHERE key = %s OR url = %s OR link_url = %s "
            "ORDER BY last_seen DESC LIMIT 1",
            (key, ref, ref),
        )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip(_COLUMNS.split(", "), row, strict=True))


def _num(value: Any) -> str:
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _topic_words(name: str, topic: dict[str, Any]) -> str:
    in_title = set(topic.get("title") or ())
    weights = topic.get("term_weights") or {}
    terms = []
    for term in topic.get("keywords") or ():
        words = f"{term} ×2 in title" if term in in_title else term
        if term in weights:
            words += f" (weight {_num(weights[term])})"
        terms.append(words)
    weight = topic.get("weight")
    of_weight = f", topic weight {_num(weight)}" if weight not in (None, 1, 1.0) else ""
    return f"{name} +{_num(topic.get('points', 0))} pts ({', '.join(terms)}{of_weight})"


def _engagement_words(part: dict[str, Any], source: str) -> str:
    factor = float(part.get("factor", 1.0))
    if part.get("value") is None:
        return "engagement: none counted for this kind of source (neutral ×1)"
    metric = part.get("metric") or "engagement"
    if part.get("percentile") is None:
        return (f"engagement: {metric} {_num(part['value'])}, too little history "
                f"({part.get('reference', 0)} recent {source} signals) to rank it (neutral ×1)")
    return (f"engagement: {metric} {_num(part['value'])}, "
            f"{_ordinal(round(float(part['percentile']) * 100))} percentile of "
            f"{part.get('reference', 0)} recent {source} signals (×{factor:.2f})")


def explain_lines(breakdown: dict[str, Any], source: str) -> list[str]:
    """The breakdown in words, one factor per line (older breakdowns: what they have)."""
    score = breakdown.get("score", 0)
    lines = [f"Scored {round(float(score))}/100"]
    if breakdown.get("version") != SCORING_VERSION:
        lines[0] += " (older scoring formula: run `harvest rescore` for the full breakdown)"
    topics = breakdown.get("topics") or {}
    ranked = sorted(topics.items(), key=lambda kv: -float(kv[1].get("points", 0)))
    if ranked:
        lines.append("topics: " + "; ".join(_topic_words(n, t) for n, t in ranked)
                     + f" → relevance {float(breakdown.get('relevance', 0)):.2f}")
    else:
        lines.append("topics: none matched → relevance 0")
    for name, terms in (breakdown.get("negative") or {}).items():
        lines.append(f"ignored topic {name}: negative keyword {', '.join(terms)}")
    if "engagement" in breakdown:
        lines.append(_engagement_words(breakdown["engagement"] or {}, source))
    age = breakdown.get("age_hours")
    freshness = float(breakdown.get("freshness", 1))
    half_life = breakdown.get("half_life_hours")
    life = f", half-life {_num(half_life)} h" if half_life else ""
    lines.append(f"freshness {freshness:.2f} ({_num(age)} h old{life})" if age is not None
                 else f"freshness {freshness:.2f} (undated: the floor)")
    lines.append(f"source weight {_num(breakdown.get('source_weight', 1))} ({source})")
    corroboration = breakdown.get("corroboration")
    if corroboration:
        sources = corroboration.get("sources") or [source]
        bonus = round((float(corroboration.get("factor", 1)) - 1) * 100)
        lines.append(f"seen on {len(sources)} sources: {', '.join(sources)} (+{bonus} %)"
                     if len(sources) > 1 else
                     f"seen on 1 source: {', '.join(sources)} (no corroboration bonus)")
    if "base" in breakdown:
        factors = [(breakdown.get("relevance", 0), "relevance"),
                   ((breakdown.get("engagement") or {}).get("factor", 1), "engagement"),
                   (freshness, "freshness"), (breakdown.get("source_weight", 1), "weight"),
                   ((corroboration or {}).get("factor", 1), "corroboration")]
        product = " × ".join(f"{float(f):.2f} {name}" for f, name in factors)
        capped = " (capped at 100)" if float(score) >= 100 else ""
        lines.append(f"= 100 × {product} = {_num(score)}{capped}")
    return lines


@main.command()
@click.argument("ref", metavar="ID|URL")
@click.option("--json", "as_json", is_flag=True, help="Print the stored breakdown as JSON.")
@friendly
def explain(ref: str, as_json: bool) -> None:
    """Why a signal scored what it did: topics and keywords matched, engagement percentile
    within its source, freshness, source weight and corroboration by other sources."""
    with _connect() as conn:
        row = _find(conn, ref.strip())
    if row is None:
        err.print(f"[red]error:[/] no signal with id or URL {shown(repr(ref))}; "
                  "`harvest top` lists ids and URLs.", highlight=False)
        sys.exit(EXIT_USAGE)
    breakdown = row["score_breakdown"] or {}
    lines = explain_lines(breakdown, row["source"])
    if as_json:
        out = {**{k: v for k, v in row.items() if k != "score_breakdown"},
               "breakdown": breakdown, "explanation": lines}
        click.echo(json.dumps(out, default=_json_default, ensure_ascii=not utf8_output(),
                               indent=2))
        return
    console.print(f"signal {row['id']} from {shown(row['source'])}: "
                  f"{shown(row['title'] or '(untitled)')}", highlight=False)
    if row["url"]:
        console.print(f"  {shown(row['url'])}", highlight=False)
    console.print(lines[0], highlight=False)
    for line in lines[1:]:
        console.print(f"  {shown(line)}", highlight=False)


@main.command("rescore")
@click.option("--since", default=None,
              help="Only signals dated after an age (24h, 7d) or an ISO date.")
@click.option("--source", "source", default=None, help="Only this source.")
@click.option("--half-life", type=_SCORE, default=None,
              help="Recency half-life in hours for every signal (default: the one each "
                   "was scored with, else HARVEST_SCORE_HALF_LIFE_HOURS).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="Signals read and written per round trip.")
@click.pass_context
@friendly
def rescore_command(ctx: click.Context, since: str | None, source: str | None,
                    half_life: float | None, batch_size: int) -> None:
    """Recompute stored scores with the current topics and weights of the sources file,
    without re-crawling; prints how many changed. Safe to run again or to interrupt."""
    if half_life is not None and not 0 < half_life <= HALF_LIFE_MAX:
        raise click.BadParameter(f"{half_life:g} is not a half-life: give hours above 0 and "
                                 f"at most {HALF_LIFE_MAX:.0f} (a century)",
                                 param_hint="'--half-life'")
    parsed = _load(ctx)
    since_at = _since(since)
    url = database.resolve_url(_config())
    database.ensure_schema(url)
    if source is not None:
        # A misspelt name is an error, not "0 signals"; one with stored rows is known
        # (`curated`, posted through the API; a source since removed from the file), as
        # for `harvest top --source`.
        with psycopg.connect(url, connect_timeout=5) as conn:
            _check_sources(ctx, conn, (source,))

    def progress(report: RescoreReport) -> None:
        if console.is_terminal:
            console.print(f"  {report.examined:,} read, {report.changed:,} changed",
                          highlight=False, end="\r")

    report = rescore(url, parsed, since=since_at, source=source, batch_size=batch_size,
                     half_life_hours=half_life,
                     default_half_life=project_settings.HARVEST_SCORE_HALF_LIFE_HOURS,
                     progress=progress)
    unchanged = report.examined - report.changed - report.moved
    console.print(f"rescored {report.examined:,} signals: {report.changed:,} changed score, "
                  f"{unchanged:,} unchanged ({report.rewritten:,} rows written)",
                  highlight=False)
    if report.moved:
        console.print(f"left {report.moved:,} signals as a crawl scored them while this ran "
                      "(it re-saw them, with the same topics)", highlight=False)
    if report.left:
        console.print(f"left {report.left:,} signals of sources the sources file does not "
                      "define as they were scored (`harvest demo`'s, removed sources); "
                      "`--source NAME` rescores one", highlight=False)
