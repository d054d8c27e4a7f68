"""Initial schema: signals, rejects, crawl_runs, sources_state, applied batches.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE crawl_runs (
    id uuid PRIMARY KEY,
    spider text NOT NULL,
    sources text[] NOT NULL DEFAULT '{}',
    job_id text,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    finish_reason text,
    scraped integer NOT NULL DEFAULT 0,
    stored integer NOT NULL DEFAULT 0,
    reseen integer NOT NULL DEFAULT 0,
    duplicates integer NOT NULL DEFAULT 0,
    rejected integer NOT NULL DEFAULT 0,
    errors integer NOT NULL DEFAULT 0,
    not_modified integer NOT NULL DEFAULT 0,
    stats jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX crawl_runs_started_at ON crawl_runs (started_at DESC);

CREATE TABLE signals (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    source text NOT NULL,
    kind text NOT NULL,
    url text,
    canonical_url text,
    feed_url text,
    external_id text,
    title text,
    text text,
    author text,
    published_at timestamptz,
    updated_at timestamptz,
    fetched_at timestamptz NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    seen_count integer NOT NULL DEFAULT 1,
    language text,
    tags text[] NOT NULL DEFAULT '{}',
    engagement jsonb NOT NULL DEFAULT '{}',
    simhash bigint,
    cluster_id bigint,
    score real NOT NULL DEFAULT 0,
    score_breakdown jsonb NOT NULL DEFAULT '{}',
    run_id uuid
);
CREATE INDEX signals_source ON signals (source);
CREATE INDEX signals_score ON signals (score DESC);
CREATE INDEX signals_published_at ON signals (published_at DESC);

CREATE TABLE rejects (
    id bigserial PRIMARY KEY,
    run_id uuid,
    source text NOT NULL,
    reason text NOT NULL,
    field text,
    url text,
    raw jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejects_source_reason ON rejects (source, reason);

CREATE TABLE sources_state (
    source text PRIMARY KEY,
    last_attempt timestamptz,
    last_success timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    disabled boolean NOT NULL DEFAULT false,
    next_due timestamptz,
    validators jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE applied_batches (
    batch_id uuid PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE applied_batches;
DROP TABLE sources_state;
DROP TABLE rejects;
DROP TABLE signals;
DROP TABLE crawl_runs;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
