"""``notifications.cluster_id`` and ``signal_url``: the story (cluster) and the URL a signal
alert announced. Notify checks a story's announcement through them as well as through the
copies still stored: once archive or retain deleted the announced copy, another copy of
the story was announced again, and so was the URL itself when its source listed it anew.
The URL of an alert whose signal is gone already comes from its payload.

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
    op.execute("ALTER TABLE notifications ADD COLUMN cluster_id bigint, "
               "ADD COLUMN signal_url text")
    op.execute("""
        UPDATE notifications n SET cluster_id = s.cluster_id, signal_url = s.url
        FROM signals s WHERE n.kind = 'signal' AND s.id = n.signal_id
    """)
    op.execute("""
        UPDATE notifications SET signal_url = payload -> 'signal' ->> 'url'
        WHERE kind = 'signal' AND signal_url IS NULL
    """)
    op.execute("CREATE INDEX notifications_story ON notifications (cluster_id, channel) "
               "WHERE kind = 'signal' AND cluster_id IS NOT NULL")
    op.execute("CREATE INDEX notifications_url ON notifications (signal_url, channel) "
               "WHERE kind = 'signal' AND signal_url IS NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE notifications DROP COLUMN cluster_id, DROP COLUMN signal_url")
