"""Alerts: ``alerts`` (one row per ops-alert episode, open until its condition clears) and
``notifications`` (one row per message per channel, with its delivery state).

- A signal is announced at most once per channel: UNIQUE (signal_id, channel) for kind
  'signal'. ``signal_id`` is not a foreign key on purpose: retention may delete or partition
  ``signals`` and the payload keeps what was said.
- An ops alert episode sends "opened" once and "resolved" once per channel: UNIQUE
  (alert_id, event, channel) for kind 'ops'; at most one open episode per key.
- ``channel = 'none'`` with status 'recorded' = no channel was configured at the time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    -- 'run_failed:SOURCE', 'stale:SOURCE', 'reject_spike:SOURCE'
    key text NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX alerts_open_key ON alerts (key) WHERE resolved_at IS NULL;

CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('signal', 'ops')),
    signal_id bigint,
    alert_id bigint REFERENCES alerts (id) ON DELETE CASCADE,
    alert_key text,
    event text CHECK (event IN ('opened', 'resolved')),
    channel text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'given_up', 'recorded')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    payload jsonb NOT NULL,
    CHECK ((kind = 'signal') = (signal_id IS NOT NULL)),
    CHECK ((kind = 'ops') = (alert_id IS NOT NULL AND event IS NOT NULL))
);
CREATE UNIQUE INDEX notifications_signal_channel ON notifications (signal_id, channel)
    WHERE kind = 'signal';
CREATE UNIQUE INDEX notifications_alert_event_channel ON notifications (alert_id, event, channel)
    WHERE kind = 'ops';
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'failed');
"""

DOWNGRADE = """
DROP TABLE notifications;
DROP TABLE alerts;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
