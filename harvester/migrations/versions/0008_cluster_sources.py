"""``cluster_sources``: the distinct sources of every cluster carried by more than one, so
the store updates corroboration per batch without reading whole clusters (a cluster of
100,000 copies of one boilerplate text made every batch rescan it).

A cluster without a row has a single source: that of any of its members.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE cluster_sources (
    cluster_id bigint PRIMARY KEY,
    sources text[] NOT NULL CHECK (cardinality(sources) >= 2)
);
INSERT INTO cluster_sources (cluster_id, sources)
SELECT coalesce(cluster_id, id), array_agg(DISTINCT source ORDER BY source)
FROM signals GROUP BY 1 HAVING count(DISTINCT source) >= 2;
"""

DOWNGRADE = """
DROP TABLE cluster_sources;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
