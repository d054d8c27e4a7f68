"""``sources_state.cursor.since``: the start of a source's last run that ran to its end with
nothing failed. The sitemap, Hacker News search and Reddit kinds take what is newer than it;
they took what was newer than ``last_success``, which a partly failed run moves too, so
what that run missed was never asked for again. Sources crawled before start from their
last success, as they did.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        UPDATE sources_state
        SET cursor = cursor || jsonb_build_object('since', last_success)
        WHERE last_success IS NOT NULL AND NOT cursor ? 'since'
    """)


def downgrade() -> None:
    op.execute("UPDATE sources_state SET cursor = cursor - 'since'")
