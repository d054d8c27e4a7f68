"""Signals of up to about 8 KB are stored inline and uncompressed.

PostgreSQL compresses a row's long values (pglz) as soon as the row passes about 2 KB,
the fixed ``TOAST_TUPLE_THRESHOLD``. Feed items with a 1-3 KB text sit just above it, so
almost every one was compressed on insert (19,662 of the benchmark's 20,000 rows), and the
``signals_staging`` rows of the store's COPY were compressed the same way first. pglz is slow
(this build of PostgreSQL has no lz4): the compression was about a sixth of PostgreSQL's CPU
time in the benchmark's full-pipeline crawl.

``toast_tuple_target = 8160`` (the largest value allowed) moves that limit to one page: a
row is compressed or moved out of line only when it would not fit on a page anyway.
Measured on this machine: PostgreSQL's CPU in the full-pipeline crawl went from 2.42-2.91 s
(mean 2.59) to 1.82-2.58 s (mean 2.13) over four crawls each, and the store step alone from
5,518-5,770 to 5,797-6,427 rows/s (three alternating runs each). The cost is disk: such rows
take their full size (the benchmark's texts 1,767 bytes instead of 1,079). On the real feeds
of ``../shared/realdata`` 9 % of entries are between 1.7 and 8 KB; the median is 259 bytes.

Rows already stored keep their form; the option applies to rows written from now on. It
changes no data and takes a brief lock (``SHARE UPDATE EXCLUSIVE``: reads and writes go on).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE signals SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE signals RESET (toast_tuple_target)")
