"""Source health (when a source was disabled, its last error), per-source cursors
(``since_id`` and the like) that API spiders resume from, and ``signals.link_url``: what a
Reddit/HN/X post points at.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE sources_state
    ADD COLUMN cursor jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN last_error text,
    ADD COLUMN disabled_at timestamptz;
ALTER TABLE signals ADD COLUMN link_url text;
"""

DOWNGRADE = """
ALTER TABLE sources_state
    DROP COLUMN cursor,
    DROP COLUMN last_error,
    DROP COLUMN disabled_at;
ALTER TABLE signals DROP COLUMN link_url;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
