"""A tweet stored before is keyed by its id: ``key`` and ``canonical_url`` of a signal whose
canonical URL is a tweet's (``x.com``/``twitter.com`` ``/<name>/status/<id>``) become those of
``https://x.com/i/web/status/<id>``, what ``services/urls.canonical_url`` now gives every
form of a tweet's address. Without it, a tweet stored under ``/alice/status/<id>`` came back
as new at its next sighting, under the new key.

Only rows keyed by their canonical URL are moved (not a feed entry keyed by its id). Where
one tweet was stored several times (under its author's name, without it, after a rename)
one row takes the key: the one that holds it already (the ``i/web`` form), else the first
stored; the other copies keep theirs, as they were stored (they stay listed until retention
removes them; deleting them here would lose their alerts and brief citations).

Downgrade changes nothing: the keys stay; older code keys a tweet by its address again and
stores each later sighting under another author name as new, as it did.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# services/urls._TWEET, anchored, and without "(?:": op.execute takes ":name" for a bound
# parameter. The tweet id is the fifth group.
TWEET = (r"^https://(www\.|mobile\.)?(x|twitter)\.com/(i/web|[^/?]+)"
         r"/status(es)?/([0-9]{1,20})([/?][^#]*)?$")


def _url_key(column: str) -> str:
    """services/urls.url_key in SQL."""
    return f"'u:' || left(encode(sha256(convert_to({column}, 'UTF8')), 'hex'), 32)"


def upgrade() -> None:
    op.execute(f"""
        WITH tweets AS (
            SELECT id, 'https://x.com/i/web/status/'
                       || (regexp_match(canonical_url, '{TWEET}'))[5] AS canonical
            FROM signals
            WHERE canonical_url ~ '{TWEET}' AND key = {_url_key("canonical_url")}
        ), keyed AS (
            SELECT id, canonical, {_url_key("canonical")} AS key FROM tweets
        ), first AS (
            SELECT DISTINCT ON (key) id, canonical, key FROM keyed
            WHERE NOT EXISTS (SELECT 1 FROM signals s WHERE s.key = keyed.key)
            ORDER BY key, id
        )
        UPDATE signals s SET key = f.key, canonical_url = f.canonical
        FROM first f WHERE s.id = f.id
    """)


def downgrade() -> None:
    pass
