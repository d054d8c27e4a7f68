"""``schedules.planned_for``: the schedule (``every 1h``, ``cron 0 6 * * 1``) its
``next_due`` was computed with, so that the scheduler sees an edited ``interval`` or
``cron`` and plans again from the last run instead of waiting for the old due time.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE schedules ADD COLUMN planned_for text")


def downgrade() -> None:
    op.execute("ALTER TABLE schedules DROP COLUMN planned_for")
