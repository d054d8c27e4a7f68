"""``harvest prune --keep N``: keep the newest N snapshots (or backups), delete older ones.

Only artifacts with a manifest count and are deleted (data file first, manifest last, so an
interrupted prune is finished by the next one). Archives are never pruned: they are the only
copy of the rows they hold. Files without a manifest (an export that never finished) are
reported, not deleted: the operator decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvester.services.ops import files


@dataclass(frozen=True, slots=True)
class PrunePlan:
    keep: list[tuple[Path, dict[str, Any]]]
    delete: list[tuple[Path, dict[str, Any]]]
    unfinished: list[Path]


def plan(directory: Path, keep: int, kind: str) -> PrunePlan:
    found = [(p, m) for p, m in files.listing(directory) if m.get("kind") == kind]
    cut = max(len(found) - keep, 0)
    # Files of another kind's manifests (an archive in the directory) are not "unfinished".
    every = files.listing(directory)
    named = {str(m.get("file")) for _, m in every} | {p.name for p, _ in every}
    unfinished = sorted(p for p in (directory.iterdir() if directory.is_dir() else [])
                        if p.is_file() and p.name not in named)
    return PrunePlan(keep=found[cut:], delete=found[:cut], unfinished=unfinished)


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
