"""The spool on its own: what is written reads back the same; bad files are set aside."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harvester.services import spool
from harvester.services.batch import Batch


def test_round_trip_keeps_rows_types_and_order(tmp_path: Path) -> None:
    now = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    batch = Batch(
        signals=[{"key": "k1", "title": "Ünïcode\nline", "published_at": now, "tags": ["a"],
                  "score_breakdown": {"topics": {"x": {"points": 2.0}}}}],
        rejects=[{"source": "s", "reason": "missing_link_and_id", "raw": {"t": "\x00?"},
                  "created_at": now}],
        run={"id": "r", "started_at": now, "finished_at": now, "scraped": 1},
    )
    first = spool.write(tmp_path, batch)
    second = spool.write(tmp_path, Batch(signals=[{"key": "k2"}]))
    assert spool.pending(tmp_path) == [first, second]
    back = spool.read(first)
    assert back.batch_id == batch.batch_id
    assert back.signals == batch.signals
    assert back.rejects == batch.rejects
    assert back.run == batch.run
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_file_is_renamed_and_reported(tmp_path: Path) -> None:
    good = spool.write(tmp_path, Batch(signals=[{"key": "k"}]))
    bad = tmp_path / "20260101T000000000000-broken.jsonl"
    bad.write_text('{"format": 1, "batch_id": "x"}\n{"t": "signal", "row": {')
    seen = list(spool.iter_pending(tmp_path))
    assert [(p, b is None) for p, b in seen] == [(bad, True), (good, False)]
    assert bad.with_suffix(".bad").exists() and not bad.exists()
    assert spool.pending(tmp_path) == [good]


def test_a_file_cut_at_a_line_boundary_is_unreadable_not_replayed_short(
        tmp_path: Path) -> None:
    # Cut after 8 of its 21 lines, a batch replayed 7 signals and was deleted: 13 lost.
    path = spool.write(tmp_path, Batch(signals=[{"key": f"k{n}"} for n in range(20)],
                                       run={"id": "r"}))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:8]))
    with pytest.raises(spool.SpoolError, match=r"7 of its 21 rows are there \(cut short\)"):
        spool.read(path)
    # Format 1 (no count) is still read; an unknown format or record type is refused.
    old = tmp_path / "old.jsonl"
    old.write_text('{"format": 1, "batch_id": "x"}\n{"t": "signal", "row": {"key": "a"}}\n')
    assert spool.read(old).signals == [{"key": "a"}]
    for text in ('{"format": 99, "batch_id": "x"}\n',
                 '{"format": 2, "batch_id": "x", "records": 1}\n{"t": "weird", "row": {}}\n'):
        old.write_text(text)
        with pytest.raises(spool.SpoolError, match="unknown"):
            spool.read(old)


def test_file_replayed_by_another_process_is_skipped(tmp_path: Path) -> None:
    first = spool.write(tmp_path, Batch(signals=[{"key": "a"}]))
    second = spool.write(tmp_path, Batch(signals=[{"key": "b"}]))
    pending = spool.iter_pending(tmp_path)
    path, _ = next(pending)
    assert path == first
    second.unlink()  # another crawl replayed it meanwhile
    assert list(pending) == []


def test_a_batch_that_cannot_be_written_leaves_no_half_file(tmp_path: Path) -> None:
    # A write that fails half-way (here a value JSON cannot take; a full disk alike) must
    # not leave a .tmp file behind for the operator to wonder about.
    good = spool.write(tmp_path, Batch(signals=[{"key": "k1"}]))
    with pytest.raises(TypeError):
        spool.write(tmp_path, Batch(signals=[{"key": "k2"}, {"key": "k3", "x": object()}]))
    assert sorted(tmp_path.iterdir()) == [good]
