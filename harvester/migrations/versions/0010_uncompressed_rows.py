"""Rows of ``signals`` up to 4 KB are stored uncompressed.

PostgreSQL compresses (pglz) the long values of every row above 2 KB. A signal with a 1–3 KB
text is such a row, and compressing it was the largest single cost of the store's COPY: a
quarter of PostgreSQL's CPU (``perf``), 15 µs of its 60 µs a row. With the target at
4 KB, those rows are written as they are; longer ones (full articles) are still compressed.

Measured on 60,000 bench rows of 1–3 KB through the store worker, three alternating runs:
PostgreSQL CPU 61–74 → 47–61 µs a row, 7,859–9,261 → 8,607–11,104 rows/s; the table with
its indexes and TOAST 2,549 → 2,924 bytes a row (+15 %). Only rows written from now on are
affected; nothing is rewritten (the statement takes a brief lock and no time).

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
    op.execute("ALTER TABLE signals SET (toast_tuple_target = 4096)")


def downgrade() -> None:
    op.execute("ALTER TABLE signals RESET (toast_tuple_target)")
