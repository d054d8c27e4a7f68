"""What an alert says, stored once as a payload (jsonb) and rendered per channel at send time.

A signal payload: ``{"type": "signal", "signal": {...}, "score", "breakdown", "why", "url"}``;
an ops payload: ``{"type": "ops", "event": "opened"|"resolved", "alert": {...}, "text"}``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from typing import Any

#: Longest title in a chat message (escapes included); the payload and the webhook keep the
#: whole title.
TITLE_MAX = 300
#: Keywords named per topic in "why": an item matching 700 of a topic's keywords made a
#: Telegram message past its 4,096 characters, refused ("message is too long") and given up.
KEYWORDS_SHOWN = 8


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def explain(breakdown: dict[str, Any]) -> str:
    """The score breakdown in words: topics and keywords, age, source weight."""
    topics = breakdown.get("topics") or {}
    parts = []
    for name, topic in sorted(topics.items(), key=lambda kv: -float(kv[1].get("points", 0))):
        matched = topic.get("keywords") or []
        keywords = ", ".join(matched[:KEYWORDS_SHOWN])
        if len(matched) > KEYWORDS_SHOWN:
            keywords += f" and {len(matched) - KEYWORDS_SHOWN} more"
        parts.append(f"{name} ({keywords}; {float(topic.get('points', 0)):g} pts)")
    words = "matched " + ", ".join(parts) if parts else "no topic matched"
    age = breakdown.get("age_hours")
    if age is not None:
        words += f"; {float(age):.0f} h old (freshness {float(breakdown.get('freshness', 1)):.2f})"
    else:
        words += "; undated"
    weight = breakdown.get("source_weight")
    if weight is not None:
        words += f"; source weight {float(weight):g}"
    return words


def signal_payload(row: dict[str, Any]) -> dict[str, Any]:
    """From a ``signals`` row (id, title, source, url, link_url, score, score_breakdown...)."""
    breakdown = row.get("score_breakdown") or {}
    title = row.get("title") or row.get("url") or "(untitled)"
    url = row.get("url") or row.get("link_url")
    return {
        "type": "signal",
        "signal": {"id": row["id"], "title": title, "source": row["source"], "url": url,
                   "published_at": _iso(row.get("published_at")),
                   "first_seen": _iso(row.get("first_seen")),
                   "also_from": list(row.get("also_from") or [])},
        "score": round(float(row["score"]), 2),
        "breakdown": breakdown,
        "why": explain(breakdown),
        "url": url,
    }


def ops_payload(key: str, event: str, text: str, details: dict[str, Any],
                opened_at: datetime, resolved_at: datetime | None) -> dict[str, Any]:
    kind, _, source = key.partition(":")
    return {
        "type": "ops", "event": event, "text": text,
        "alert": {"key": key, "kind": kind, "source": source, "details": details,
                  "opened_at": _iso(opened_at), "resolved_at": _iso(resolved_at)},
    }


#: Longest ops text in a chat message: Telegram refuses more than 4,096 characters and a
#: Slack section more than 3,000 (escapes included), each given up as a permanent failure;
#: a source with many moved URLs made 5,840. The webhook's JSON keeps the whole text.
OPS_TEXT_MAX = 2_000
#: Longest link put behind a chat message's title; a longer one (URLs up to 8 KB are
#: valid) is left out and the message says where to find it.
LINK_MAX = 1_500


#: Other sources of a story named in a chat message; the webhook's JSON has them all.
ALSO_SHOWN = 5


def _sources(sig: dict[str, Any]) -> str:
    """The signal's source, and the other sources that carried the story when picked."""
    also = sig.get("also_from") or []  # not in payloads stored before it was
    if not also:
        return str(sig["source"])
    named = ", ".join(also[:ALSO_SHOWN])
    if len(also) > ALSO_SHOWN:
        named += f" and {len(also) - ALSO_SHOWN} more"
    return f"{sig['source']} (also {named})"


Escape = Callable[[str], str]


def _unescaped(text: str) -> str:
    return text


def _cut(text: str, limit: int, escape: Escape) -> tuple[str, int]:
    """``escape(text)`` within ``limit`` characters, cut between two escaped characters
    (never inside an escape), and how many characters of ``text`` were left off. Cut
    before escaping, 2,000 characters of '&' made a Slack section of 10,000."""
    pieces, size = [], 0
    for i, char in enumerate(text):
        piece = escape(char)
        if size + len(piece) > limit:
            return "".join(pieces), len(text) - i
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces), 0


def _title(sig: dict[str, Any], escape: Escape) -> str:
    title, left = _cut(sig["title"], TITLE_MAX - 1, escape)
    return f"{title}…" if left else title


def _ops_line(payload: dict[str, Any], escape: Escape = _unescaped) -> str:
    head = "RESOLVED" if payload["event"] == "resolved" else "ALERT"
    text, left = _cut(payload["text"], OPS_TEXT_MAX, escape)
    if left:
        text += (f"… ({left:,} characters more: `harvest notify --dry-run` or the alerts "
                 "table has the whole text)")
    return f"{head}: {text}"


def _chat_link(payload: dict[str, Any], form: Escape = _unescaped) -> tuple[str | None, str]:
    """The link for a chat message's title (in the channel's ``form``), and a line to add
    when it is too long."""
    url = payload.get("url")
    if url and len(form(url)) > LINK_MAX:
        return None, (f"\n(its link is {len(url):,} characters long: `harvest explain "
                      f"{payload['signal']['id']}` shows it)")
    return (form(url) if url else None), ""


def plain(payload: dict[str, Any], escape: Escape = _unescaped) -> str:
    """Plain text (terminal, Slack's notification fallback), each part ``escape``d."""
    if payload["type"] == "ops":
        return _ops_line(payload, escape)
    sig = payload["signal"]
    lines = [_title(sig, escape), escape(f"{_sources(sig)} · score {payload['score']:g}"),
             escape(f"why: {payload['why']}")]
    if payload.get("url"):
        lines.append(escape(payload["url"]))
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _html_escape(text: str) -> str:
    return html.escape(text, quote=False)


def _slack_link(url: str) -> str:
    return url.replace("|", "%7C").replace(">", "%3E")


def slack_fallback(payload: dict[str, Any]) -> str:
    """:func:`plain`, escaped for Slack: its ``text`` is what notifications show, and a
    title's ``<!channel>`` there pinged the whole channel."""
    return plain(payload, _slack_escape)


def render_slack(payload: dict[str, Any]) -> str:
    # Slack counts a section's 3,000 characters with the escapes: cut after escaping.
    if payload["type"] == "ops":
        return _ops_line(payload, _slack_escape)
    sig = payload["signal"]
    title = _title(sig, _slack_escape)
    url, note = _chat_link(payload, _slack_link)
    head = f"*<{url}|{title}>*" if url else f"*{title}*"
    return (f"{head}\n{_slack_escape(_sources(sig))} · score *{payload['score']:g}*\n"
            f"why: {_slack_escape(payload['why'])}{note}")


def render_telegram(payload: dict[str, Any]) -> str:
    if payload["type"] == "ops":
        return _ops_line(payload, _html_escape)
    sig = payload["signal"]
    title = _title(sig, _html_escape)
    url, note = _chat_link(payload)
    head = f'<b><a href="{html.escape(url)}">{title}</a></b>' if url else f"<b>{title}</b>"
    return (f"{head}\n{html.escape(_sources(sig), quote=False)} · score "
            f"<b>{payload['score']:g}</b>\nwhy: {html.escape(payload['why'], quote=False)}"
            f"{html.escape(note, quote=False)}")


def render_webhook(payload: dict[str, Any], delivery_id: int) -> dict[str, Any]:
    """The whole message; ``delivery_id`` is the same on every attempt of it."""
    if payload["type"] == "ops":
        return {"type": "ops", "delivery_id": delivery_id, "event": payload["event"],
                "alert": payload["alert"], "text": payload["text"]}
    return {"type": "signal", "delivery_id": delivery_id, "signal": payload["signal"],
            "score": payload["score"], "breakdown": payload["breakdown"],
            "url": payload["url"]}
