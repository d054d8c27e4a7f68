"""``notifications.cluster_id``: the story (cluster) a signal alert announced. Notify checks a
story's announcement through it as well as through the copies still stored: once archive
or retain deleted the announced copy, another copy of the story was announced again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE notifications ADD COLUMN cluster_id bigint")
    op.execute("""
        UPDATE notifications n SET cluster_id = s.cluster_id
        FROM signals s WHERE n.kind = 'signal' AND s.id = n.signal_id
    """)
    op.execute("CREATE INDEX notifications_story ON notifications (cluster_id, channel) "
               "WHERE kind = 'signal' AND cluster_id IS NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE notifications DROP COLUMN cluster_id")
