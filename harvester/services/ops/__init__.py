"""Operating on the stored data: verify, snapshots, archives, retention, backups, stats.

No Scrapy and no click here: ``harvester/cli_ops.py`` parses arguments and renders; these
modules do the work against a psycopg connection (autocommit: each module opens the
transactions it needs) and the files under ``$HARVEST_HOME/{snapshots,archives,backups}``.
"""

from __future__ import annotations


class OpsError(RuntimeError):
    """An operation refused or failed for a reason the operator can fix; one sentence."""
