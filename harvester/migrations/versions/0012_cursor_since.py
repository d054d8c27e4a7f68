"""``sources_state.cursor.since``: the start of a source's last run that ran to its end with
nothing failed. The sitemap, Hacker News search and Reddit kinds take what is newer than it;
they took what was newer than ``last_success``, which a partly failed run moves too, so
what that run missed was never asked for again. A source crawled before starts from its
last such run in ``crawl_runs`` (finished, no error, nothing lost, something fetched); with
runs but none such, from nothing (everything is taken again, re-seen); with no run left
(deleted by hand), from its last success, as before.

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
        WITH runs AS (
            SELECT src, r.started_at, r.finish_reason = 'finished'
                   AND coalesce((c ->> 'errors')::bigint, 0) = 0
                   AND coalesce((c ->> 'lost')::bigint, 0) = 0
                   AND c ->> 'skipped' IS NULL
                   AND coalesce((c ->> 'fetched')::bigint, 0)
                       + coalesce((c ->> 'not_modified')::bigint, 0) > 0 AS complete
            FROM crawl_runs r, unnest(r.sources) AS src,
                 LATERAL (SELECT r.stats -> 'harvest/by_source' -> src AS c) AS counters
        ),
        since AS (
            SELECT st.source,
                   CASE WHEN EXISTS (SELECT 1 FROM runs WHERE runs.src = st.source)
                        THEN (SELECT max(started_at) FROM runs
                              WHERE runs.src = st.source AND complete)
                        ELSE st.last_success END AS at
            FROM sources_state st
            WHERE st.last_success IS NOT NULL AND NOT st.cursor ? 'since'
        )
        UPDATE sources_state st SET cursor = st.cursor || jsonb_build_object('since', since.at)
        FROM since WHERE since.source = st.source AND since.at IS NOT NULL
    """)


def downgrade() -> None:
    op.execute("UPDATE sources_state SET cursor = cursor - 'since'")
