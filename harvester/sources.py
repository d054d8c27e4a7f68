"""The sources file (``sources.toml``): model, loader and one-sentence errors."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

KINDS = ("feed", "reddit", "hackernews", "x", "pages", "sitemap", "rendered")
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SourcesError(ValueError):
    """A sources file that cannot be used; the message is one sentence for the operator."""


def parse_interval(value: str) -> timedelta:
    """``"30m"`` → 30 minutes; accepts ``Ns``, ``Nm``, ``Nh``, ``Nd`` with N ≥ 1."""
    match = _INTERVAL.match(value)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{value!r} is not an interval like '30m', '6h' or '1d'")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class Source(BaseModel):
    """One ``[[sources]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    kind: Literal["feed", "reddit", "hackernews", "x", "pages", "sitemap", "rendered"]
    enabled: bool = True
    weight: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    interval: str = "1h"
    urls: list[str] = Field(default_factory=list, validate_default=True)

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("kind") == "feed" and not value:
            raise ValueError("a feed source needs at least one URL in urls = [...]")
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @property
    def interval_td(self) -> timedelta:
        return parse_interval(self.interval)


class Topic(BaseModel):
    """One ``[topics.NAME]`` table: keywords that make an item relevant, and how much."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keywords: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    weight: float = 1.0


class SourcesFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source] = Field(default_factory=list)
    topics: dict[str, Topic] = Field(default_factory=dict)

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
    if first["type"] == "literal_error" and field == "kind":
        message = f"unknown kind {first['input']!r} (expected one of {', '.join(KINDS)})"
    elif first["type"] == "missing":
        message = "is required but missing"
    return f"{path}: {where}, field {field!r}: {message}."


def load_sources(path: Path) -> SourcesFile:
    """Read and validate a sources file; raise :class:`SourcesError` with one clear sentence."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourcesError(
            f"{path}: no such sources file; create it or point HARVEST_SOURCES/--sources at one."
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
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
    return parsed
