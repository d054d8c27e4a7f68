"""The spool on its own: what is written reads back the same; bad files are set aside."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harvester.services import spool
from harvester.services.batch import Batch

ID = "6a1b2c3d-0000-4000-8000-000000000001"


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
    bad.write_text(f'{{"format": 1, "batch_id": "{ID}"}}\n{{"t": "signal", "row": {{')
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
    # Format 1 (no count) is still read.
    old = tmp_path / "old.jsonl"
    old.write_text(f'{{"format": 1, "batch_id": "{ID}"}}\n'
                   '{"t": "signal", "row": {"key": "a"}}\n')
    assert spool.read(old).signals == [{"key": "a"}]


@pytest.mark.parametrize(("text", "says"), [
    ('{"format": 99, "batch_id": "%s"}\n', "line 1: unknown format 99"),
    ("[1]\n", "line 1: the header is not a JSON object"),
    ('{"format": 2, "batch_id": "hand-made", "records": 0}\n',
     "line 1: the header's batch_id 'hand-made' is no UUID"),
    # Valid JSON of another shape made replay (and every crawl's replay) crash.
    ('{"format": 2, "batch_id": "%s", "records": 1}\n{"t": "weird", "row": {}}\n',
     "line 2: not a signal, reject or run record"),
    ('{"format": 2, "batch_id": "%s", "records": 1}\n["signal", {}]\n',
     "line 2: not a signal, reject or run record"),
    ('{"format": 2, "batch_id": "%s", "records": 1}\n{"t": "signal", "row": "oops"}\n',
     "line 2: not a signal, reject or run record"),
    ('{"format": 2, "batch_id": "%s", "records": 2}\n{"t": "signal", "row": {}}\n'
     '{"t": "signal", "row": {"ke', "line 3: Unterminated string starting at (character 25)"),
])
def test_a_file_of_another_shape_is_unreadable_naming_its_line(
        tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(text.replace("%s", ID))
    with pytest.raises(spool.SpoolError) as info:
        spool.read(path)
    assert str(info.value) == f"spool file {path} is unreadable ({says})"


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
