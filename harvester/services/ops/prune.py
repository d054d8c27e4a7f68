"""``harvest prune --keep N``: keep the newest N snapshots (or backups), delete older ones.

Only artifacts with a manifest count and are deleted (data file first, manifest last, so an
interrupted prune is finished by the next one). Archives are never pruned: they are the only
copy of the rows they hold. Files without a manifest (an export that never finished) are
reported, not deleted: the operator decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvester.services.ops import files


@dataclass(frozen=True, slots=True)
class PrunePlan:
    keep: list[tuple[Path, dict[str, Any]]]
    delete: list[tuple[Path, dict[str, Any]]]
    unfinished: list[Path]
    #: Manifests whose data file is gone or not the size they say (moved off the host,
    #: cut short): neither counted among the N kept nor deleted.
    broken: list[tuple[Path, str]] = field(default_factory=list)


def _broken(mpath: Path, manifest: dict[str, Any]) -> str | None:
    """Why the artifact of ``manifest`` cannot be restored, or None (its size is checked,
    not its checksum: `harvest restore` does that, and reading every file here is slow)."""
    data = files.data_file(mpath, manifest)
    if data is None:
        return f"it names no data file next to it ({manifest.get('file')!r})"
    if not data.is_file():
        return f"its data file {data.name!r} is missing"
    size = data.stat().st_size
    if size != manifest.get("bytes"):
        return f"{data.name} is {size:,} bytes, not the {manifest.get('bytes')} its manifest says"
    return None


def plan(directory: Path, keep: int, kind: str) -> PrunePlan:
    # A backup whose dump was moved away, or cut short, counted as one of the N kept: the
    # last good one was deleted and the runbook's restore had nothing to restore.
    found, broken = [], []
    for mpath, manifest in files.listing(directory):
        if manifest.get("kind") != kind:
            continue
        if (why := _broken(mpath, manifest)) is not None:
            broken.append((mpath, why))
        else:
            found.append((mpath, manifest))
    cut = max(len(found) - keep, 0)
    # Files of another kind's manifests (an archive in the directory) are not "unfinished".
    every = files.listing(directory)
    named = {str(m.get("file")) for _, m in every} | {p.name for p, _ in every}
    unfinished = sorted(p for p in (directory.iterdir() if directory.is_dir() else [])
                        if p.is_file() and p.name not in named)
    return PrunePlan(keep=found[cut:], delete=found[:cut], unfinished=unfinished,
                     broken=broken)


def apply(pruning: PrunePlan) -> int:
    """Delete what the plan says; return the bytes freed."""
    freed = 0
    for mpath, manifest in pruning.delete:
        data = mpath.with_name(str(manifest.get("file")))
        if data.is_file():
            freed += data.stat().st_size
            data.unlink()
        mpath.unlink(missing_ok=True)
    return freed
