"""Request and response bodies of the API (they are also its OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


#: A time in a response: pydantic writes UTC as "Z", and /health, `--json`, snapshots and
#: archives write "+00:00", as the docs promise; the schema still says date-time.
UtcTime = Annotated[datetime, PlainSerializer(_iso_utc, when_used="json"),
                    WithJsonSchema({"type": "string", "format": "date-time"})]


class SignalSummary(BaseModel):
    id: int
    source: str
    kind: str
    url: str | None
    link_url: str | None = None
    title: str | None
    author: str | None = None
    published_at: UtcTime | None
    first_seen: UtcTime
    last_seen: UtcTime
    seen_count: int
    score: float
    tags: list[str]
    language: str | None = None
    cluster_id: int = Field(description="coalesce(cluster_id, id): the story this belongs to")


class SignalPage(BaseModel):
    items: list[SignalSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on "
                                                "the last page")
    limit: int


class TopSignal(SignalSummary):
    cluster_sources: list[str] = Field(description="this signal's source first, then the "
                                                   "others that carried the story")
    cluster_size: int


class TopList(BaseModel):
    items: list[TopSignal]


class SignalDetail(SignalSummary):
    canonical_url: str | None = None
    feed_url: str | None = None
    external_id: str | None = None
    text: str | None = None
    updated_at: UtcTime | None = None
    fetched_at: UtcTime
    engagement: dict[str, Any]
    score_breakdown: dict[str, Any] = Field(description="topics and keywords matched, "
                                                        "points, relevance, freshness, weight")
    simhash: int | None = None
    run_id: UUID | None = None
    cluster_size: int
    cluster_sources: list[str]
    siblings: list[SignalSummary] = Field(description="other signals of the same cluster, "
                                                      "best first (at most 50)")


class NewSignal(BaseModel):
    """A signal a curator adds by hand; validated, keyed and scored like a crawled one."""

    source: Annotated[str, Field(min_length=1, max_length=100, pattern=SOURCE_NAME)] = "curated"
    url: Annotated[str, Field(max_length=4000)] | None = None
    external_id: Annotated[str, Field(max_length=500)] | None = None
    title: Annotated[str, Field(max_length=20_000)] | None = None
    text: Annotated[str, Field(max_length=200_000)] | None = None
    author: Annotated[str, Field(max_length=1000)] | None = None
    published_at: datetime | None = None
    tags: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=50)] = []
    language: Annotated[str, Field(max_length=20)] | None = None


class CreatedSignal(BaseModel):
    id: int
    created: bool = Field(description="false when the signal was already stored (same "
                                      "canonical URL or source id): nothing was changed")
    key: str
    score: float


class CrawlRequest(BaseModel):
    source: Annotated[str, Field(min_length=1, max_length=100, pattern=SOURCE_NAME)]


class CrawlAccepted(BaseModel):
    source: str
    job_id: str
    node: str


class SourceInfo(BaseModel):
    name: str
    kind: str
    enabled: bool
    interval: str
    cron: str | None = None
    weight: float
    state: str = Field(description="fresh, stale, disabled, never run, never succeeded, or off")
    last_success: UtcTime | None = None
    last_attempt: UtcTime | None = None
    age_s: int | None = None
    allowed_s: int | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    signals: int = 0
    last_signal_at: UtcTime | None = None
    next_due: UtcTime | None = None
    paused: bool = False
    last_job: str | None = None
    last_outcome: str | None = None
    moved: dict[str, str] = Field(
        default_factory=dict,
        description="listed URLs the latest run found redirecting permanently: old → new")


class SourceList(BaseModel):
    items: list[SourceInfo]


class Run(BaseModel):
    id: UUID
    spider: str
    sources: list[str]
    job_id: str | None
    started_at: UtcTime
    finished_at: UtcTime | None
    finish_reason: str | None
    scraped: int
    stored: int
    reseen: int
    duplicates: int
    rejected: int
    errors: int
    not_modified: int
    outcomes: dict[str, str] = Field(
        default_factory=dict,
        description="Per source: succeeded, partly failed, failed, skipped (switched off, "
                    "disabled, no credentials: not attempted), or the crawl's finish reason "
                    "when it did not finish (shutdown, …).")


class RunList(BaseModel):
    items: list[Run]


class Reject(BaseModel):
    id: int
    created_at: UtcTime
    source: str
    reason: str
    field: str | None
    url: str | None
    raw: dict[str, Any]


class RejectList(BaseModel):
    items: list[Reject]


class Brief(BaseModel):
    week: str
    generated_at: UtcTime
    markdown: str
    html: str
    signal_ids: list[int]
    params: dict[str, Any]
