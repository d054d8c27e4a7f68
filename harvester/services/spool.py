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
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from harvester.services.batch import Batch, from_jsonable, to_jsonable

logger = logging.getLogger(__name__)

FORMAT = 2
_FORMATS = (1, 2)
_TAGS = frozenset({"signal", "reject", "run"})
#: A ``.tmp`` this old is no write in progress (one takes well under a second) but one a
#: killed process left.
STALE_TMP_S = 600


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
    """The batch in ``path``; SpoolError naming the line when the file is not one this
    module wrote (cut short, edited, or of another shape), so that it is set aside."""
    number = 1
    try:
        with path.open(encoding="utf-8", errors="surrogatepass") as fh:
            header = json.loads(fh.readline())
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            if header.get("format") not in _FORMATS:
                raise ValueError(f"unknown format {header.get('format')!r}")
            batch = Batch(batch_id=_uuid(header.get("batch_id")))
            count = 0
            for line in fh:
                number += 1  # named in the error
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or record.get("t") not in _TAGS or (
                        not isinstance(record.get("row"), dict)):
                    raise ValueError("not a signal, reject or run record")
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
    except OSError as exc:
        raise SpoolError(f"spool file {path} is unreadable: {exc}") from exc
    except (ValueError, TypeError) as exc:  # json's errors are ValueErrors
        where = "" if str(exc).endswith("(cut short)") else f"line {number}: "
        raise SpoolError(f"spool file {path} is unreadable ({where}{_short(exc)})") from exc
    return batch


def batch_id(path: Path) -> str | None:
    """The batch id in the header of ``path``; None when it has none that is a UUID."""
    try:
        with path.open(encoding="utf-8", errors="surrogatepass") as fh:
            header = json.loads(fh.readline())
        return _uuid(header.get("batch_id") if isinstance(header, dict) else None)
    except (OSError, ValueError):
        return None


def _uuid(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"the header's batch_id {value!r} is no UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"the header's batch_id {value!r} is no UUID") from None


def _short(exc: Exception) -> str:
    """json's message without its "line 1 column N (char N)": each line is read alone."""
    text = str(exc)
    if isinstance(exc, json.JSONDecodeError):
        text = f"{exc.msg} (character {exc.pos + 1})"
    return text


def pending(spool_dir: Path) -> list[Path]:
    """Spooled batches in the order they were written."""
    if not spool_dir.is_dir():
        return []
    return sorted(spool_dir.glob("*.jsonl"))


def backlog(spool_dir: Path) -> int:
    """Batches waiting for a replay: pending files, and the ``.tmp`` files a killed crawl
    left (:func:`partial`), which a replay settles and takes. /health, /metrics and `harvest
    stats` counted the first only, and a killed crawl's batches waited unseen."""
    return len(pending(spool_dir)) + len(partial(spool_dir))


def set_aside(spool_dir: Path) -> dict[str, int]:
    """Files no replay takes until an operator acts: ``refused`` (``*.refused``, the
    database refused the batch) and ``unreadable`` (``*.bad``)."""
    if not spool_dir.is_dir():
        return {"refused": 0, "unreadable": 0}
    return {"refused": len(list(spool_dir.glob("*.refused"))),
            "unreadable": len(list(spool_dir.glob("*.bad")))}


def partial(spool_dir: Path) -> list[Path]:
    """``.tmp`` files older than ``STALE_TMP_S``: writes a process killed outright (``kill
    -9``, a power cut) did not finish."""
    if not spool_dir.is_dir():
        return []
    stale = []
    for tmp in sorted(spool_dir.glob("*.tmp")):
        try:
            if time.time() - tmp.stat().st_mtime >= STALE_TMP_S:
                stale.append(tmp)
        except FileNotFoundError:  # renamed meanwhile: a write that finished
            continue
    return stale


def settle_partial(spool_dir: Path) -> int:
    """Make each of :func:`partial`'s files what it is: a whole batch (the process was
    killed between the fsync and the rename) becomes a pending ``.jsonl``, and one cut
    short an unreadable ``.bad``, which replay and ``harvest verify`` report. Left as
    ``.tmp``, neither was replayed nor said to be lost. Returns how many were cut short."""
    cut = 0
    for tmp in partial(spool_dir):
        try:
            read(tmp)
        except SpoolError as exc:
            logger.error("%s: a write a killed process left; renamed to .bad", exc)
            target = tmp.with_suffix(".bad")
        else:
            target = tmp.with_suffix(".jsonl")
        try:
            os.rename(tmp, target)
        except FileNotFoundError:  # another replay settled it first
            continue
        cut += target.suffix == ".bad"
    return cut


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
            try:
                path.rename(path.with_suffix(".bad"))
            except OSError as error:
                logger.error("%s; it could not be renamed to .bad (%s)", exc, error.strerror)
            else:
                logger.error("%s; renamed to .bad", exc)
            yield path, None
        else:
            yield path, batch
