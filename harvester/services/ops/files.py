"""Artifacts on disk: where they go, their names, manifests and checksums.

Every artifact is a data file plus ``<base>.manifest.json`` next to it. The data file is
written under a temporary name, fsynced and renamed; the manifest is written last, so an
artifact without a manifest is one that never finished. ``sha256`` is the digest of the file
as it lies on disk (compressed or not): ``sha256sum FILE`` prints the same value.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvester.services.ops import OpsError

MANIFEST_SUFFIX = ".manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def default_dir(home: Path, kind: str) -> Path:
    """``$HARVEST_HOME/snapshots``, ``/archives`` or ``/backups``."""
    return home.absolute() / kind


def new_base(directory: Path, prefix: str, now: datetime | None = None) -> Path:
    """``DIR/PREFIX-20261128T101500Z`` that no artifact uses yet (``-2``… on a clash)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OpsError(f"cannot create {directory} ({exc.strerror}); choose another --dir or "
                       "HARVEST_HOME") from None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"{prefix}-{stamp}"
    n = 1
    while list(directory.glob(base.name + ".*")):
        n += 1
        base = directory / f"{prefix}-{stamp}-{n}"
    return base


class GzipWriter(gzip.GzipFile):
    """A gzip file whose bytes depend on its content only: no mtime and no file name in
    the header (the name carries the timestamp, so equal snapshots had unequal
    checksums)."""

    def __init__(self, path: Path) -> None:
        self._raw = path.open("wb")
        super().__init__(filename="", mode="wb", fileobj=self._raw, mtime=0)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def manifest_path(data_path: Path) -> Path:
    """The manifest of a data file (names carry no dot before their suffixes)."""
    return data_path.with_name(data_path.name.split(".", 1)[0] + MANIFEST_SUFFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def writing(tmp: Path) -> Iterator[None]:
    """The block writes ``tmp``: if it fails, ``tmp`` is removed, and a full disk (an
    OSError with no file name, which the CLI took for a bug: a traceback) is one sentence."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise OpsError(f"cannot write {tmp.with_suffix('')} ({exc.strerror or exc}); "
                           "free space there or choose another --dir") from exc
        raise


def finish(tmp: Path, final: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Fsync and rename ``tmp`` to ``final``, then write its manifest; return the manifest."""
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    manifest = {
        "format": FORMAT,
        "file": final.name,
        "bytes": final.stat().st_size,
        "sha256": sha256_of(final),
        "created_at": datetime.now(UTC).isoformat(),
        **manifest,
    }
    path = manifest_path(final)
    part = path.with_name(path.name + ".tmp")
    part.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with part.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, path)
    return manifest


#: What harvest's exports call themselves in their manifests.
KINDS = ("snapshot", "archive", "backup")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


#: What restoring each kind reads from its manifest besides the file and its checksum.
REQUIRED: dict[str, tuple[str, ...]] = {"snapshot": ("columns", "rows"),
                                        "archive": ("columns", "rows")}


def data_file(mpath: Path, manifest: dict[str, Any]) -> Path | None:
    """The data file ``manifest`` names next to it, or None when it names none: "" or
    "x/y.ndjson" ended restore and prune in a ValueError traceback."""
    name = manifest.get("file")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name:
        return None
    return mpath.with_name(name)


def load(path: Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """The data file and manifest named by ``path`` (either of the two), checksum verified."""
    if str(path) in ("", ".") or path.is_dir():
        # "$(ls -t … | head -n 1)" with nothing there gives "", read as the current directory.
        shown = "an empty name (the current directory)" if str(path) in ("", ".") else path
        raise OpsError(f"{shown} is a directory, not {_a(kind)} file; "
                       f"`ls $HARVEST_HOME/{kind}s` lists what there is")
    path = path.absolute()
    if not path.exists():
        raise OpsError(f"{path} does not exist; `ls $HARVEST_HOME/{kind}s` lists what there is")
    mpath = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    if not mpath.is_file():
        raise OpsError(f"{path} has no manifest ({mpath.name}): only complete {kind}s made by "
                       "harvest can be restored")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OpsError(f"the manifest {mpath} is unreadable ({exc}); restore refused") from exc
    found = manifest.get("kind") if isinstance(manifest, dict) else None
    if found != kind:
        if found not in KINDS:
            raise OpsError(f"{mpath} is not a manifest harvest wrote (its kind is "
                           f"{found!r}); only complete {kind}s made by harvest can be restored")
        command = "restore" if found == "backup" else f"{found} restore"
        raise OpsError(f"{mpath} describes {_a(found)}, not {_a(kind)}; use "
                       f"`harvest {command}`")
    data = data_file(mpath, manifest)
    if data is None:
        raise OpsError(f"{mpath} names no data file next to it ({manifest.get('file')!r}); "
                       "restore refused")
    if not data.is_file():
        raise OpsError(f"{data} named by {mpath.name} is missing; restore refused")
    digest = sha256_of(data)
    if digest != manifest.get("sha256"):
        raise OpsError(f"{data} does not match the checksum in its manifest (sha256 {digest[:12]}… "
                       f"instead of {str(manifest.get('sha256'))[:12]}…): it was changed or "
                       "truncated after it was written, so it is not restored")
    for key, shape in (("columns", list), ("rows", int)):
        if key in REQUIRED.get(kind, ()) and not isinstance(manifest.get(key), shape):
            raise OpsError(f"{mpath} has no {key} (its {key!r} is {manifest.get(key)!r}): "
                           "it is not one harvest wrote; restore refused")
    return data, manifest


def listing(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Complete artifacts in ``directory``: (manifest path, manifest), oldest first."""
    found = []
    for mpath in directory.glob("*" + MANIFEST_SUFFIX) if directory.is_dir() else []:
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # an unreadable manifest is never pruned by accident
        found.append((mpath, manifest))
    return sorted(found, key=lambda item: (str(item[1].get("created_at", "")), item[0].name))
