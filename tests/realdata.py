"""Access to the shared real-world feed corpus (read-only, never copied into the repo).

The corpus lives next to the repository in ``../shared/realdata``; CI has it, a fresh
clone does not, so every caller must check :data:`REALDATA` exists and skip otherwise.

Three reference projects recorded ground truth in three shapes:

* ``rss-parser/expected/NAME.json`` — ``{"feed": {"items": [{"title", "link", ...}]}}``.
  Some of these files are ISO-8859-1, not UTF-8 (``encoding.json``), so they are read
  with a latin-1 fallback.
* ``fastfeedparser/expected/NAME[.slim].json`` — ``{"entries": [{"title", "link", ...}]}``
  (the feedparser-compatible dict shape).
* ``feed-rs/KIND/expected/NAME.serde.json`` — ``{"entries": [{"title": {"content"},
  "links": [{"href", "rel"}]}]}``; the entry link is the first ``alternate`` (or
  rel-less) link, as feed-rs itself presents it.

The input document is the sibling (or ``input/``) file with the same stem.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

REALDATA: Path = Path(__file__).resolve().parents[2] / "shared" / "realdata"
FEEDS: Path = REALDATA / "feeds"

Pair = tuple[str | None, str | None]

_TAG_RE = re.compile(r"<[^>]{0,500}>")
_WS_RE = re.compile(r"\s+")
#: What one U+FFFD of a mis-decoded reference can stand for in our (correct) text: a
#: non-ASCII character, or a space when the byte was a no-break space we collapsed.
_ANY_UNDECODED = r"(?:[^\x00-\x7f]| )"
_EXPECTED_SUFFIXES = (".serde.json", ".slim.json", ".json")


@dataclass(frozen=True, slots=True)
class FeedCase:
    """One corpus document with the (title, link) pairs a reference parser recorded."""

    path: Path
    expected: list[Pair]

    @property
    def folder(self) -> str:
        """Top-level corpus folder (``rss-parser``, ``feed-rs`` …) for per-folder tables."""
        return self.path.relative_to(FEEDS).parts[0]

    @property
    def name(self) -> str:
        """Path relative to the feeds folder, for readable test ids."""
        return str(self.path.relative_to(FEEDS))


def feed_cases() -> list[FeedCase]:
    """Every corpus feed that has an expected-output file, sorted by path."""
    if not FEEDS.is_dir():
        return []
    cases: list[FeedCase] = []
    for expected_file in sorted(FEEDS.rglob("expected/*.json")):
        source = _input_for(expected_file)
        if source is None:
            continue
        cases.append(FeedCase(path=source, expected=_expected_pairs(expected_file)))
    return cases


def all_feed_files() -> list[Path]:
    """Every document in the feeds corpus, with or without expected output."""
    if not FEEDS.is_dir():
        return []
    return sorted(
        p
        for p in FEEDS.rglob("*")
        if p.is_file() and "expected" not in p.parts and p.name != "LICENSE"
    )


def _input_for(expected_file: Path) -> Path | None:
    """The document an expected file describes: same stem, beside ``expected/`` or in
    ``input/``."""
    stem = expected_file.name
    for suffix in _EXPECTED_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    root = expected_file.parent.parent
    for folder in (root, root / "input"):
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and candidate.name.rsplit(".", 1)[0] == stem:
                return candidate
    return None


def _load_json(path: Path) -> Any:
    """Read JSON that is usually UTF-8 but sometimes ISO-8859-1 (rss-parser's encoding.json)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return json.loads(text)


def _expected_pairs(expected_file: Path) -> list[Pair]:
    """(title, link) per expected entry, in document order, whatever the reference's shape."""
    data = _load_json(expected_file)
    if isinstance(data.get("feed"), dict) and "items" in data["feed"]:
        return [(_str(item.get("title")), _str(item.get("link"))) for item in data["feed"]["items"]]
    pairs: list[Pair] = []
    for entry in data.get("entries") or []:
        title = entry.get("title")
        if isinstance(title, dict):  # feed-rs: {"content_type", "content"}
            pairs.append((_str(title.get("content")), _feed_rs_link(entry.get("links") or [])))
        else:
            pairs.append((_str(title), _str(entry.get("link"))))
    return pairs


def _feed_rs_link(links: list[dict[str, Any]]) -> str | None:
    """The entry's main link as feed-rs models it: first alternate/rel-less, else first."""
    for link in links:
        if link.get("rel") in (None, "alternate"):
            return _str(link.get("href"))
    return _str(links[0].get("href")) if links else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def normalise_title(s: str | None) -> str | None:
    """Comparable form of a title.

    References disagree on presentation, not content: rss-parser keeps raw markup and
    entities from double-escaped titles (``&#x0024;4300 … 1930ft<sup>2</sup>``), some keep
    the document's leading newlines, feed-rs keeps ``type="html"`` titles verbatim. So:
    unescape entities (twice, for double-escaped sources), drop tags, NFC-normalise and
    collapse whitespace. Case is kept: a case difference would be a real bug.
    """
    if s is None:
        return None
    text = html.unescape(html.unescape(s))
    text = _TAG_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _WS_RE.sub(" ", text).strip()
    return text or None


def normalise_link(s: str | None) -> str | None:
    """Comparable form of a link.

    Strip surrounding whitespace (rss-parser keeps ``\\n`` before links), unescape
    ``&amp;`` left in by some references, and lower-case scheme and host, which are
    case-insensitive, and an empty path is ``/`` (RFC 3986 §6.2.3). Paths and queries
    are kept as-is: they are case-sensitive.
    """
    if s is None:
        return None
    text = html.unescape(s.strip())
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme and parts.netloc:
        # RFC 3986 6.2.3: an empty path is "/" for http(s).
        path = parts.path or "/"
        text = urlunsplit(
            parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), path=path)
        )
    return text


def titles_match(expected: str | None, ours: str | None) -> bool:
    """Expected title equals ours after normalisation; ``None`` expected means no claim.

    U+FFFD in the expected title marks a byte the reference could not decode (rss-parser
    read ISO-8859-1 uolNoticias as UTF-8): it stands for any one non-ASCII character, so
    our correct decoding is not counted as a disagreement.
    """
    exp, got = normalise_title(expected), normalise_title(ours)
    if exp is None:
        return True
    if got is None:
        return False
    if "\ufffd" in exp:
        pattern = "".join(_ANY_UNDECODED if ch == "\ufffd" else re.escape(ch) for ch in exp)
        return re.fullmatch(pattern, got) is not None
    return exp == got


def links_match(expected: str | None, ours: str | None) -> bool:
    """Expected link equals ours; a relative expected link (references that do not resolve
    against xml:base) matches when it resolves to our absolute link."""
    exp, got = normalise_link(expected), normalise_link(ours)
    if exp is None:
        return True
    if got is None:
        return False
    if exp == got:
        return True
    if not urlsplit(exp).scheme:
        return normalise_link(urljoin(got, exp)) == got
    return False


def pair_matches(expected: Pair, ours: Pair) -> bool:
    """Both title and link agree (a ``None`` on the expected side makes no claim)."""
    return titles_match(expected[0], ours[0]) and links_match(expected[1], ours[1])


def count_matches(expected: list[Pair], ours: list[Pair]) -> tuple[int, int]:
    """(matched, compared) expected pairs.

    A pair matches our entry at the same position or, failing that, any of our entries
    with the same link (or the same title when the reference has no link): a rejected or
    reordered entry must not make every later one count as a miss. Pairs where the
    reference has neither title nor link say nothing and are not compared.
    """
    matched = compared = 0
    for index, pair in enumerate(expected):
        if pair[0] is None and pair[1] is None:
            continue
        compared += 1
        positional = index < len(ours) and pair_matches(pair, ours[index])
        if positional or any(pair_matches(pair, candidate) for candidate in ours):
            matched += 1
    return matched, compared
