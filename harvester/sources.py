"""The sources file (``sources.toml``): model, loader and one-sentence errors."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harvester.services.urls import split_error

KINDS = ("feed", "reddit", "hackernews", "x", "pages", "sitemap", "rendered")
#: Spider per source kind (each spider is named after its kind); here, not in the runner,
#: so that `harvest jobs` and the scheduler need not import Scrapy.
SPIDERS: dict[str, str] = {kind: kind for kind in KINDS}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: The longest source or topic name (the API's parameters take as much).
MAX_NAME = 100
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SourcesError(ValueError):
    """A sources file that cannot be used; the message is one sentence for the operator."""


def _seconds(value: str) -> int:
    match = _INTERVAL.match(value)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{value!r} is not an interval like '30m', '6h' or '1d'")
    return int(match.group(1)) * _UNITS[match.group(2)]


#: The longest interval a source may have: the scheduler and staleness add it (times the
#: stale factor) to dates, and "3000000d" passed the file and then overflowed there.
MAX_INTERVAL = timedelta(days=3660)


def parse_interval(value: str) -> timedelta:
    """``"30m"`` → 30 minutes; accepts ``Ns``, ``Nm``, ``Nh``, ``Nd`` with N ≥ 1, up to
    ``MAX_INTERVAL`` (about ten years)."""
    try:
        interval = timedelta(seconds=_seconds(value))
    except OverflowError:  # past timedelta's 999,999,999 days
        interval = MAX_INTERVAL * 2
    if interval > MAX_INTERVAL:
        raise ValueError(f"{value!r} is longer than an interval may be (at most "
                         f"{MAX_INTERVAL.days}d)")
    return interval


def ago(value: str, now: datetime | None = None) -> datetime:
    """The moment an age (``"24h"``, ``"7d"``) before ``now`` (UTC); an age reaching back
    before year 1 is the start of the calendar (everything is newer). Raises ``ValueError``
    for what is not an age."""
    seconds = _seconds(value)
    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


# Options that only some kinds take; anything else set on a source is an error, so a typo
# or an option copied from another kind is reported instead of silently ignored.
KIND_OPTIONS: dict[str, frozenset[str]] = {
    "feed": frozenset({"urls"}),
    "reddit": frozenset({"api_base", "auth_base", "subreddit", "listing", "time_filter",
                         "query", "limit", "max_pages"}),
    "hackernews": frozenset({"api_base", "feed", "query", "tags", "limit", "max_pages"}),
    "x": frozenset({"api_base", "query", "limit", "max_pages"}),
    "pages": frozenset({"urls", "item_selector", "fields", "next_page", "follow",
                        "max_pages"}),
    "sitemap": frozenset({"urls", "url_pattern", "follow", "limit"}),
    "rendered": frozenset({"urls", "wait_for", "item_selector", "fields", "next_page",
                           "next_click", "max_pages"}),
}
# Options every kind takes.
COMMON_FIELDS = frozenset({"name", "kind", "enabled", "weight", "interval", "cron",
                           "requests_per_minute"})
# What a pages/rendered source's `fields` may fill.
PAGE_FIELDS = frozenset({"url", "link", "title", "text", "author", "published", "tags"})
# Options a kind cannot do without.
KIND_REQUIRED: dict[str, tuple[str, ...]] = {
    "feed": ("urls",),
    "x": ("query",),
    "pages": ("urls", "item_selector", "fields"),
    "sitemap": ("urls",),
    "rendered": ("urls", "wait_for", "item_selector", "fields"),
}


class Source(BaseModel):
    """One ``[[sources]]`` entry; kind-specific options are documented in README.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    kind: Literal["feed", "reddit", "hackernews", "x", "pages", "sitemap", "rendered"]
    enabled: bool = True
    weight: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False)] = 1.0
    interval: str = "1h"
    # When set, the scheduler follows this cron expression (UTC) instead of `interval`.
    cron: str | None = None
    # Budget across all of this source's requests; None = AutoThrottle alone.
    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    urls: list[str] = Field(default_factory=list)
    # API kinds: where the API lives (a mirror, a proxy, a local test server).
    api_base: str | None = None
    auth_base: str | None = None
    # reddit
    subreddit: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+]+$")] | None = None
    listing: Literal["hot", "new", "top", "rising", "search"] | None = None
    time_filter: Literal["hour", "day", "week", "month", "year", "all"] | None = None
    # reddit search, hackernews Algolia search, x recent search
    query: Annotated[str, Field(min_length=1)] | None = None
    # hackernews
    feed: Literal["top", "new", "best"] | None = None
    tags: str | None = None
    # items per page (reddit, hackernews, x) or URLs per run (sitemap)
    limit: Annotated[int, Field(ge=1)] | None = None
    max_pages: Annotated[int, Field(ge=1)] | None = None
    # pages / rendered: selectors (CSS, or XPath when it starts with "/" or "(")
    item_selector: str | None = None
    fields: dict[str, str] | None = None
    next_page: str | None = None
    next_click: str | None = None
    wait_for: str | None = None
    follow: bool | None = None
    # sitemap: only page URLs matching this regular expression
    url_pattern: str | None = None

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for url in value:
            _check_url(url)
        return value

    @field_validator("api_base", "auth_base")
    @classmethod
    def _check_base(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value)
        return value.rstrip("/") if value else value

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"{value!r} is not a cron expression ({exc})") from None
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        # The name is a Scrapyd job id's start (and so a log file's name), an API parameter
        # (at most 100 characters) and a column of every table: a 250-character one made
        # every Scrapyd job die on "File name too long".
        if not _NAME.fullmatch(value):
            raise ValueError("must start with a letter or digit and hold only letters, digits, "
                             "'_', '.' and '-'")
        if len(value) > MAX_NAME:
            raise ValueError(f"is {len(value)} characters long; keep it to {MAX_NAME}")
        return value

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str | None) -> str | None:
        # "   " passed, and a Reddit search asked for nothing at every run.
        if value is not None and not value.strip():
            raise ValueError("is blank; write what to search for")
        return value

    @field_validator("url_pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _check_kind_options(self) -> Source:
        allowed = COMMON_FIELDS | KIND_OPTIONS[self.kind]
        for option in sorted(self.model_fields_set - allowed):
            raise _OptionError(option, f"does not apply to {_a(self.kind)} source")
        for option in KIND_REQUIRED.get(self.kind, ()):
            if not getattr(self, option):
                raise _OptionError(option, f"is required for {_a(self.kind)} source")
        if self.kind == "reddit":
            if self.listing == "search" and not self.query:
                raise _OptionError("query", "is required for a reddit search")
            if self.listing != "search" and not self.subreddit:
                raise _OptionError("subreddit", "is required unless listing = \"search\"")
        if self.kind == "hackernews" and bool(self.feed) == bool(self.query or self.tags):
            raise _OptionError("feed", "set either feed (top, new, best) or query/tags")
        if self.kind == "pages":
            fields = set(self.fields or {})
            for key in sorted(fields - PAGE_FIELDS):
                raise _OptionError("fields", f"{key!r} is not a field a pages source fills "
                                             f"(use {', '.join(sorted(PAGE_FIELDS))})")
            # Found only when crawled before: `sources check` said OK and each run failed.
            if {"url", "link"} <= fields:
                raise _OptionError("fields", "url and link are the same field; keep one")
            if not {"url", "link"} & fields:
                # An item is kept by its address: with a title alone every card was
                # rejected (missing_url_and_id) and the crawl still said it succeeded.
                raise _OptionError("fields", "a pages source needs a url (or link) selector: "
                                             "an item is stored by its address")
        if self.kind in ("pages", "rendered"):
            # Caught when the file loads (`harvest sources check`), not at the crawl.
            self._check_selectors()
        if self.kind == "rendered":
            if self.next_page and self.next_click:
                raise _OptionError("next_click", "set next_page or next_click, not both")
            if not {"url", "link", "id"} & set(self.fields or {}):
                raise _OptionError("fields", "a rendered source needs a url, link or id field "
                                             "to tell its rows apart")
        return self

    def _check_selectors(self) -> None:
        # parsel: only when needed
        from harvester.parsers.selectors import is_xpath, selector_error

        named = [("item_selector", "", self.item_selector)]
        if self.item_selector and _selects_values(self.item_selector):
            # Every match was a string, no item: each crawl rejected every one of them.
            raise _OptionError("item_selector", f"{self.item_selector!r} selects text or "
                                                "attributes; it must select the elements "
                                                "that hold one item each")
        if self.next_page and "{page}" in self.next_page and self.kind != "rendered":
            raise _OptionError("next_page", "a {page} address template is for rendered "
                                            "sources; here next_page is a link selector")
        if self.next_page and "{page}" not in self.next_page:  # else a URL template
            named.append(("next_page", "", self.next_page))
        named += [("fields", f"{key}: ", expr) for key, expr in (self.fields or {}).items()]
        # What the browser waits for and clicks: Playwright takes plain CSS or XPath (a
        # typo failed every crawl in the browser, past `harvest sources check`).
        browser = [("wait_for", self.wait_for), ("next_click", self.next_click)]
        named += [(option, "", expr) for option, expr in browser]
        if self.next_click:
            browser.append(("item_selector", self.item_selector))
        for option, expr in browser:
            if expr is not None and "::" in expr and not is_xpath(expr):
                raise _OptionError(option, f"{expr!r} cannot be used: the browser takes "
                                           "plain CSS or XPath (no ::text or ::attr)")
        for option, prefix, expr in named:
            if expr is not None and (problem := selector_error(expr)):
                raise _OptionError(option, f"{prefix}{expr!r} cannot be used: {problem}")

    def next_due(self, after: datetime) -> datetime:
        """The first time after ``after`` this source is due again (cron, else interval)."""
        if self.cron:
            return next(CronSim(self.cron, after))
        return after + self.interval_td

    @property
    def interval_td(self) -> timedelta:
        return parse_interval(self.interval)

    def period(self, now: datetime) -> timedelta:
        """How long this source waits between crawls: its interval, or with ``cron`` the
        gap between its next two due times after ``now`` (what staleness is measured in)."""
        if self.cron:
            first = self.next_due(now)
            return self.next_due(first) - first
        return self.interval_td


def _selects_values(selector: str) -> bool:
    """Whether a CSS or XPath selector ends in text or an attribute, not elements."""
    last = selector.strip().rsplit("/", 1)[-1]
    return ("::text" in selector or "::attr(" in selector or last.startswith("@")
            or last.replace(" ", "") in ("text()", "string()"))


def _check_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):  # HTTPS:// is one too
        raise ValueError(f"{url!r} is not an http(s) URL")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]  # an "@" in a query is no password
    if "@" in unicodedata.normalize("NFKC", netloc):
        # Never crawled ("invalid hostname"), and the URL with its password went into
        # errors, logs and the API's /sources. Not repeated here either (urllib's message
        # for a full-width "＠" quotes the whole netloc).
        raise ValueError("carries a user name or password (user:password@host), which "
                         "harvest does not send; remove it from the URL")
    if not netloc or not netloc.isprintable() or any(c.isspace() for c in netloc):
        # "http://127.0.0.1 :8080/" passed, then failed each crawl ("Invalid URI").
        raise ValueError(f"{url!r} is not an http(s) URL (its host is empty or has a space "
                         "or a control character)")
    if problem := split_error(url):
        # One such URL stopped a whole spider at its start, every source in it charged a
        # failed run.
        raise ValueError(f"{url!r} is not a usable URL ({problem})")
    if urlsplit(url).port == 0:
        raise ValueError(f"{url!r} is not a usable URL (port 0)")


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "x" else f"a {kind}"


class _OptionError(ValueError):
    """A kind-level problem with one option; reported against that option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


def _not_blank(term: str) -> str:
    if not term.strip():  # a blank term would match everywhere (or cancel every topic)
        raise ValueError("a term cannot be blank")
    # Composed, as validate stores titles and texts: "café" typed with a combining accent
    # matched nothing.
    return unicodedata.normalize("NFC", term)


#: A keyword, phrase or negative term: scoring strips it, so spaces alone are nothing.
_Term = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class Keyword(BaseModel):
    """A weighted keyword or phrase: ``{term = "zero-day", weight = 3}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    term: _Term
    weight: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)] = 1.0


class Topic(BaseModel):
    """One ``[topics.NAME]`` table: keywords and phrases that make an item relevant (a plain
    string weighs 1), ``negative`` terms that cancel the topic for an item, ``sources`` it is
    limited to (all when absent), and the topic's ``weight``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    keywords: Annotated[list[str | Keyword], Field(min_length=1)]
    # Points grow with it; a negative weight would make relevance run off below zero.
    weight: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)] = 1.0
    negative: list[_Term] = Field(default_factory=list)
    sources: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("keywords", mode="before")
    @classmethod
    def _check_keywords(cls, value: Any) -> Any:
        # Validated here so a wrong entry is one sentence, not a report per union member.
        if not isinstance(value, list):
            return value
        out: list[str | Keyword] = []
        for entry in value:
            if isinstance(entry, Keyword):
                out.append(entry)
            elif isinstance(entry, str):
                out.append(_not_blank(entry))
            elif isinstance(entry, dict):
                try:
                    out.append(Keyword.model_validate(entry))
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"]) or "entry"
                    msg = first["msg"].lower().removeprefix("value error, ")
                    raise ValueError(f"{entry!r}: {where!r} {msg}") from None
            else:
                raise ValueError(f"{entry!r} is neither a string nor a table like "
                                 "{term = \"zero-day\", weight = 3}")
        seen: dict[str, str] = {}
        for entry in out:
            term = (entry if isinstance(entry, str) else entry.term).strip()
            if (first := seen.setdefault(term.lower(), term)) is not term:
                # The first one won and the other was ignored without a word: a weighted
                # entry appended to a list that had the plain term weighed 1.
                also = "" if first == term else f" (as {first!r})"
                raise ValueError(f"{term!r} is listed twice{also}; list it once, with its "
                                 "weight")
        return out

    def terms(self) -> list[tuple[str, float]]:
        """``(term, weight)`` per keyword (each term is listed once: see _check_keywords)."""
        return [(entry.strip(), 1.0) if isinstance(entry, str)
                else (entry.term.strip(), entry.weight) for entry in self.keywords]


class SourcesFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sources: list[Source] = Field(default_factory=list)
    topics: dict[str, Topic] = Field(default_factory=dict)

    @field_validator("topics")
    @classmethod
    def _check_topic_names(cls, value: dict[str, Topic]) -> dict[str, Topic]:
        for name in value:
            if not name.strip() or not name.isprintable():
                raise ValueError(f"the topic name {name!r} is blank or has control "
                                 "characters; name it in words")
            if len(name) > MAX_NAME:
                raise ValueError(f"the topic name {name[:40]!r}… is {len(name)} characters "
                                 f"long; keep it to {MAX_NAME}")
        return value

    def get(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise SourcesError(f"unknown source {name!r}: the sources file defines {known}")

    def enabled(self, kind: str | None = None) -> list[Source]:
        return [s for s in self.sources if s.enabled and (kind is None or s.kind == kind)]


def _describe(path: Path, data: dict[str, Any], error: ValidationError) -> str:
    first = error.errors()[0]
    loc = list(first["loc"])
    where = "the file"
    if loc[:1] == ["sources"] and len(loc) > 1 and isinstance(loc[1], int):
        entries = data.get("sources") or []
        entry = entries[loc[1]] if loc[1] < len(entries) else {}
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"source {name!r}" if name else f"source #{loc[1] + 1}"
        loc = loc[2:]
    elif loc[:1] == ["topics"] and len(loc) > 1:
        where = f"topic {loc[1]!r}"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc if not isinstance(p, int)) or "entry"
    message = first["msg"].removeprefix("Value error, ")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, _OptionError):
        field, message = cause.option, cause.message
    if first["type"] == "literal_error" and field == "kind":
        message = f"unknown kind {first['input']!r} (expected one of {', '.join(KINDS)})"
    elif first["type"] == "missing":
        message = "is required but missing"
    elif first["type"].endswith("_type") and "input" in first:
        # The file is strict: TOML has types, and "2" or "yes" is a slip to point at.
        message = f"{message}, not {_toml_value(first['input'])}"
    return f"{path}: {where}, field {field!r}: {message}."


def _toml_value(value: Any) -> str:
    """What the file holds, as TOML would call it: ``the string '2'``."""
    names = {str: "the string", bool: "the boolean", int: "the integer", float: "the number",
             list: "the array", dict: "the table"}
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
    if isinstance(value, bool):
        shown = str(value).lower()
    return f"{names.get(type(value), 'the value')} {shown}"


def load_sources(path: Path) -> SourcesFile:
    """Read and validate a sources file; raise :class:`SourcesError` with one clear sentence."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourcesError(
            f"{path}: no such sources file; create it or point HARVEST_SOURCES/--sources at one."
        ) from None
    except IsADirectoryError:
        raise SourcesError(f"{path} is a directory, not a sources file; point "
                           "HARVEST_SOURCES/--sources at the TOML file.") from None
    except OSError as exc:
        raise SourcesError(f"{path}: cannot be read ({exc.strerror}); fix its permissions or "
                           "point HARVEST_SOURCES/--sources at another file.") from None
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is no TOML error.
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SourcesError(f"{path}: not valid TOML ({exc}).") from None
    try:
        parsed = SourcesFile.model_validate(data)
    except ValidationError as exc:
        raise SourcesError(_describe(path, data, exc)) from None
    seen: set[str] = set()
    for source in parsed.sources:
        if source.name in seen:
            raise SourcesError(f"{path}: source {source.name!r}, field 'name': duplicate name.")
        seen.add(source.name)
    for name, topic in parsed.topics.items():
        # A misspelt source would silently switch the topic off for every item.
        for unknown in [s for s in topic.sources or () if s not in seen]:
            known = ", ".join(sorted(seen)) or "none"
            raise SourcesError(f"{path}: topic {name!r}, field 'sources': unknown source "
                               f"{unknown!r} (the file defines {known}).")
    return parsed
