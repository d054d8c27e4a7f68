"""Scheduler state per source: when it is due, the job it last submitted (and where), what
came of it, and whether an operator paused it. Replaces the unused sources_state.next_due.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE schedules (
    source text PRIMARY KEY,
    next_due timestamptz,
    paused boolean NOT NULL DEFAULT false,
    -- The job being (or last) submitted. job_state 'submitting' is written and committed
    -- before schedule.json is called, with the job id we choose: after a crash the
    -- scheduler finds the job on a node or submits it under the same id, never twice.
    job_id text,
    job_node text,
    job_state text,
    job_due timestamptz,
    job_submitted_at timestamptz,
    last_outcome text,
    last_finished_at timestamptz,
    skipped_running integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crawl_runs_job_id ON crawl_runs (job_id) WHERE job_id IS NOT NULL;
ALTER TABLE sources_state DROP COLUMN next_due;
"""

DOWNGRADE = """
ALTER TABLE sources_state ADD COLUMN next_due timestamptz;
DROP INDEX crawl_runs_job_id;
DROP TABLE schedules;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
