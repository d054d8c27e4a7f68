"""One-sentence messages to operators (logs, CLI, API): the first line of an error, a
source whose URL moved, and outside text made safe to show on a terminal."""

from __future__ import annotations

import re
from typing import Any

#: What a terminal obeys instead of showing: C0 and C1 controls (ESC, CSI, BEL …), DEL,
#: and the bidi overrides that show "exe.html" for "lmth.exe". Line breaks and tabs are
#: turned into spaces (a newline in a server's error text forged table rows and log lines).
_UNSHOWABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202d\u202e]")
_BREAKS = re.compile(r"[\t\n\r]+")


def shown(value: object) -> str:
    """``value`` as text for rich markup: :func:`printable`, its ``[`` escaped (a server's
    "Forbidden [/]" crashed `harvest sources` with a MarkupError)."""
    from rich.markup import escape  # only where something is printed

    return escape(printable(str(value)))


def printable_lines(text: str) -> str:
    """:func:`printable` line by line: a message of several lines keeps them."""
    return "\n".join(printable(line) for line in text.split("\n"))


def printable(text: str) -> str:
    """``text`` from outside (a server's error, a feed's title or URL) as one line a
    terminal shows as it is: no control sequence, no line break."""
    if text.isprintable():
        return text
    return _UNSHOWABLE.sub("", _BREAKS.sub(" ", text))


#: Longest URL put in front of a source's last error (`harvest sources`, ops alerts).
URL_SHOWN = 120


def short_url(url: str) -> str:
    """``url`` for the front of a one-line error: an X search URL of 250 characters (its
    query carries every field asked for) left no room for the reason behind it, which
    `harvest sources` and ops alerts cut off. The query goes first; the log keeps it all."""
    if len(url) <= URL_SHOWN:
        return url
    base, question, _ = url.partition("?")
    if len(base) + 2 <= URL_SHOWN:
        return base + ("?…" if question else "")
    return base[:URL_SHOWN - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its type's name when it has none.
    Imports nothing: the store worker uses it too."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def moved(source: str, old: str, new: str) -> str:
    """A listed URL of ``source`` that redirects permanently, and what to do about it."""
    return f"{source}: {old} redirects permanently to {new}; put the new URL in the sources file"


def utf8_output() -> bool:
    """Whether standard output takes any character (its encoding is UTF-8)."""
    import codecs
    import sys

    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def tolerate_narrow_output() -> None:
    """Write what the terminal's encoding lacks as ``?`` rather than fail on it: with a
    latin-1 locale or ``PYTHONIOENCODING=latin-1`` a title's CJK, rich's "…" or explain's
    "→" raised UnicodeEncodeError (a 30-line traceback, exit 1, after a crawl had stored
    its items)."""
    import io
    import sys

    for stream in (sys.stdout, sys.stderr):
        # "surrogateescape" is what the C (POSIX) locale gives: it raised on "é" as "strict" did.
        if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict",
                                                                      "surrogateescape"):
            stream.reconfigure(errors="replace")


#: Narrower than this, a table is one column of borders: ``COLUMNS`` is taken as unset.
MIN_COLUMNS = 20


#: The width of output that goes to no terminal (a pipe, a file, CI's log) when
#: ``COLUMNS`` does not set one: wide enough for every table at its natural width.
UNBOUNDED_COLUMNS = 250


def console_width(stream: Any = None) -> int | None:
    """The width for rich's consoles: ``COLUMNS`` when it is a number of at least
    ``MIN_COLUMNS`` (``COLUMNS=0``, which some CI runners set, made every command print
    nothing at all, warnings and errors included: 80 then); else None (the terminal's)
    when ``stream`` (default stdout) is a terminal, and ``UNBOUNDED_COLUMNS`` when it is
    not: rich's 80 there cut `make run | tee`'s and CI's summary headers to "fetc…",
    "re-s…", "reje…"."""
    import os
    import sys

    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = None
    if columns is not None:
        return 80 if columns < MIN_COLUMNS else None
    try:
        terminal = (stream or sys.stdout).isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        terminal = False
    return None if terminal else UNBOUNDED_COLUMNS


def utc_time(value: Any, *, seconds: bool = False, this_year: int | None = None) -> str:
    """A stored time as a table shows it: in UTC, whatever the database session's zone
    (the embedded server took the machine's at initdb, so one command printed 17:42 and
    another 12:12 for one run). With ``this_year``, a time of that year drops its year
    ("11-29 11:00") and one of another year its clock ("2021-11-29"): an old article no
    longer looked like today's."""
    from datetime import UTC, datetime

    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    # isoformat, not strftime: "%Y" wrote year 1 as "1".
    text = when.isoformat(sep=" ", timespec="seconds" if seconds else "minutes")
    text = text[:19 if seconds else 16]
    if this_year is None:
        return text
    return text[5:] if when.year == this_year else text[:10]


def table_time(value: Any, *, seconds: bool = False) -> str:
    """A stored time as every table shows it: :func:`utc_time` of the current year, so
    `top` and `rejects` no longer wrote "11-29 14:05" where `stats`, `sources` and
    `jobs list` wrote "2026-11-29 14:05" (sentences, such as a retention cut-off, keep
    the year)."""
    from datetime import UTC, datetime

    return utc_time(value, seconds=seconds, this_year=datetime.now(UTC).year)
