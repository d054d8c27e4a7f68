"""The bundled demo site used by ``make demo``: a few invented feeds served offline.

The files under ``site/`` carry placeholders instead of fixed values, so the demo
always looks fresh and points at whatever port the local server picked:

* ``{{ago:3h}}`` (units ``s``, ``m``, ``h``, ``d``, ``w``): the moment that long before
  "now", written as RFC 822 in RSS 2.0 files and as RFC 3339 everywhere else
  (Atom, JSON Feed, RSS 1.0 ``dc:date``);
* ``{{base}}``: the base URL the site is served from, without a trailing slash.

:func:`render_site` writes a filled-in copy of the site plus a matching
``sources.toml``; serve the copy with :class:`harvester.services.localsite.LocalSite`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

AGO_TOKEN = re.compile(r"\{\{ago:(\d+)([smhdw])\}\}")
BASE_TOKEN = "{{base}}"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Only these are templates; anything else (images, say) is copied byte for byte.
_TEMPLATE_SUFFIXES = frozenset({".xml", ".rss", ".atom", ".json", ".html", ".txt", ".toml"})
# Quotes, angle brackets and ampersands would need escaping in XML or JSON; a
# loopback base URL never has them, so refuse rather than escape.
_SAFE_BASE = re.compile(r"^https?://[^\s\"'<>&{}\\]+$")
_RSS2_ROOT = re.compile(r"<rss[\s>]")


def site_root() -> Traversable:
    """The packaged demo site (a plain directory in a normal install)."""
    return files(__name__) / "site"


def sources_template() -> Traversable:
    """The packaged demo ``sources.toml`` with its ``{{base}}`` placeholders."""
    return files(__name__) / "sources.toml"


def source_names() -> frozenset[str]:
    """The names of the demo's sources: `harvest demo` shares the database, so their
    state rows are expected there (``harvest verify``)."""
    with sources_template().open("rb") as fh:
        data = tomllib.load(fh)
    return frozenset(str(s["name"]) for s in data.get("sources", []))


def format_date(moment: datetime, rfc822: bool) -> str:
    """``moment`` in UTC as RFC 822 (``Tue, 03 Jun 2025 10:00:00 GMT``) or RFC 3339."""
    moment = moment.astimezone(UTC).replace(microsecond=0)
    if rfc822:
        return format_datetime(moment, usegmt=True)
    return moment.isoformat().replace("+00:00", "Z")


def uses_rfc822(name: str, text: str) -> bool:
    """RSS 2.0 wants RFC 822 dates; Atom, JSON Feed and RSS 1.0 (dc:date) want RFC 3339."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix == ".rss" or (suffix == ".xml" and _RSS2_ROOT.search(text) is not None)


def render_text(text: str, *, now: datetime, base_url: str, rfc822: bool) -> str:
    """Fill every placeholder in ``text``."""

    def ago(match: re.Match[str]) -> str:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return format_date(now - delta, rfc822)

    return AGO_TOKEN.sub(ago, text).replace(BASE_TOKEN, base_url)


def _walk(node: Traversable, prefix: PurePosixPath) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Every file under ``node`` with its path relative to the site root."""
    for child in sorted(node.iterdir(), key=lambda item: item.name):
        if child.name.startswith((".", "__")):
            continue  # editor droppings, __pycache__
        if child.is_dir():
            yield from _walk(child, prefix / child.name)
        else:
            yield prefix / child.name, child.read_bytes()


def _checked(rendered: str, where: str) -> str:
    """Fail loudly on a placeholder we do not know rather than ship it to the demo."""
    if "{{" in rendered:
        leftover = rendered[rendered.index("{{") :][:40]
        raise ValueError(f"{where}: unknown placeholder {leftover!r}")
    return rendered


def _normalise_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    # A naive datetime is taken as UTC, the only zone the feeds are written in.
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def render_site(dest: Path, base_url: str, now: datetime | None = None) -> Path:
    """Copy the demo site into ``dest`` with dates relative to ``now`` and links on
    ``base_url``; write ``dest/sources.toml`` for it and return that path."""
    base = base_url.rstrip("/")
    if not _SAFE_BASE.match(base):
        raise ValueError(f"{base_url!r} is not a plain http(s) base URL")
    moment = _normalise_now(now)
    dest.mkdir(parents=True, exist_ok=True)
    for relative, data in _walk(site_root(), PurePosixPath()):
        target = dest.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.suffix.lower() in _TEMPLATE_SUFFIXES:
            text = data.decode("utf-8")
            rendered = render_text(
                text, now=moment, base_url=base, rfc822=uses_rfc822(relative.name, text)
            )
            data = _checked(rendered, str(relative)).encode("utf-8")
        target.write_bytes(data)
    sources = dest / "sources.toml"
    template = sources_template().read_text(encoding="utf-8")
    sources.write_text(_checked(template.replace(BASE_TOKEN, base), "sources.toml"), "utf-8")
    logger.debug("rendered demo site into %s for %s", dest, base)
    return sources
