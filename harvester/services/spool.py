"""The on-disk spool: batches the database could not take, kept as JSON Lines until replayed.

One file per batch, ``<UTC timestamp>-<batch id>.jsonl``; the first line is a header, then
one line per row tagged ``signal``, ``reject`` or ``run``. Files are written to a temporary
name, fsynced and renamed, so a crash never leaves a half batch that looks complete. The
header (format 2) counts the rows: a file cut short afterwards (a bad copy, a disk
error) is unreadable rather than replayed as if whole and deleted. Format 1 files (no
count) are still read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from harvester.services.batch import Batch, from_jsonable, to_jsonable

logger = logging.getLogger(__name__)

FORMAT = 2
_FORMATS = (1, 2)
_TAGS = frozenset({"signal", "reject", "run"})


class SpoolError(RuntimeError):
    """A spool file is unreadable; it is left in place (renamed ``.bad``) for the operator."""


def write(spool_dir: Path, batch: Batch) -> Path:
    spool_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = spool_dir / f"{stamp}-{batch.batch_id}.jsonl"
    tmp = path.with_suffix(".tmp")
    # surrogatepass: a batch that holds a lone surrogate (which the store replaces, but a
    # batch is spooled as it came) must still reach the disk; read() reads it back as is.
    try:
        with tmp.open("w", encoding="utf-8", errors="surrogatepass") as fh:
            records = [("signal", row) for row in batch.signals]
            records += [("reject", row) for row in batch.rejects]
            if batch.run is not None:
                records.append(("run", batch.run))
            fh.write(json.dumps({"format": FORMAT, "batch_id": batch.batch_id,
                                 "records": len(records)}) + "\n")
            for tag, row in records:
                fh.write(json.dumps({"t": tag, "row": to_jsonable(row)}, ensure_ascii=False)
                         + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file (a full disk) is not a batch
        raise
    os.replace(tmp, path)
    return path


def read(path: Path) -> Batch:
    try:
        with path.open(encoding="utf-8", errors="surrogatepass") as fh:
            header = json.loads(fh.readline())
            if header.get("format") not in _FORMATS:
                raise ValueError(f"unknown format {header.get('format')!r}")
            batch = Batch(batch_id=header["batch_id"])
            count = 0
            for line in fh:
                if not line.strip():
                    continue
                record = json.loads(line)
                if record["t"] not in _TAGS:
                    raise ValueError(f"unknown record type {record['t']!r}")
                row = from_jsonable(record["row"])
                count += 1
                if record["t"] == "signal":
                    batch.signals.append(row)
                elif record["t"] == "reject":
                    batch.rejects.append(row)
                else:
                    batch.run = row
        expected = header.get("records")
        if expected is not None and count != expected:
            raise ValueError(f"{count} of its {expected} rows are there (cut short)")
    except (OSError, ValueError, KeyError) as exc:
        raise SpoolError(f"spool file {path} is unreadable: {exc}") from exc
    return batch


def pending(spool_dir: Path) -> list[Path]:
    """Spooled batches in the order they were written."""
    if not spool_dir.is_dir():
        return []
    return sorted(spool_dir.glob("*.jsonl"))


def set_aside(spool_dir: Path) -> dict[str, int]:
    """Files no replay takes until an operator acts: ``refused`` (``*.refused``, the
    database refused the batch) and ``unreadable`` (``*.bad``)."""
    if not spool_dir.is_dir():
        return {"refused": 0, "unreadable": 0}
    return {"refused": len(list(spool_dir.glob("*.refused"))),
            "unreadable": len(list(spool_dir.glob("*.bad")))}


def iter_pending(spool_dir: Path) -> Iterator[tuple[Path, Batch | None]]:
    """Pending batches; ``None`` for a file that cannot be read (renamed ``.bad``). Files
    another process replayed meanwhile (several crawls start at once) are skipped."""
    for path in pending(spool_dir):
        if not path.exists():
            continue
        try:
            batch = read(path)
        except SpoolError as exc:
            if not path.exists():
                continue
            logger.error("%s; renamed to .bad", exc)
            path.rename(path.with_suffix(".bad"))
            yield path, None
        else:
            yield path, batch
