"""Weekly briefs: one row per ISO week, the rendered Markdown and HTML and the signals cited.

- ``week`` is the ISO week (``2026-W47``) and the primary key: regenerating a week replaces
  its row (``INSERT … ON CONFLICT (week) DO UPDATE``), so there is never more than one.
- ``signal_ids`` are the signals the brief links to (one per source per story). Not a
  foreign key on purpose: retention may delete or partition ``signals`` and the brief keeps
  what it said.
- ``params`` records how it was made (entries per topic, …) so a reader can tell two
  renderings of the same week apart.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE briefs (
    week text PRIMARY KEY CHECK (week ~ '^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$'),
    generated_at timestamptz NOT NULL DEFAULT now(),
    markdown text NOT NULL,
    html text NOT NULL,
    signal_ids bigint[] NOT NULL DEFAULT '{}',
    params jsonb NOT NULL DEFAULT '{}'
);
"""

DOWNGRADE = """
DROP TABLE briefs;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
