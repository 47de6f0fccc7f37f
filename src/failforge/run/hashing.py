"""sha256 of an input file or folder, reused while nothing about it changed.

A digest carries a *stamp*: size and modification time (nanoseconds) of a file, or
of every file in a folder. Given the digest recorded earlier, ``digest`` hashes again
only when the stamp differs, so a resume does not read a 100 MB weights file to
learn what it already knows; files are hashed through ``cached_sha256``, whose
on-disk cache (keyed the same way) spares a new run the same work. (A file rewritten with the same size within the same
mtime tick would go unnoticed; filesystems with nanosecond mtimes make that rare.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from failforge.models.convert import cached_sha256


@dataclass(frozen=True)
class Digest:
    sha256: str
    stamp: str


def _files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out.extend(Path(root) / n for n in sorted(names))
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def stamp(path: Path) -> str:
    """What changes when the content is likely to have changed."""
    if path.is_dir():
        h = hashlib.sha256()
        for p in _files(path):
            h.update(f"{p.relative_to(path).as_posix()}\0{_file_stamp(p)}\n".encode())
        return "dir:" + h.hexdigest()
    return _file_stamp(path)


def _sha256(path: Path) -> str:
    if not path.is_dir():
        return cached_sha256(path)
    h = hashlib.sha256()
    for p in _files(path):
        h.update(f"{p.relative_to(path).as_posix()}\0{cached_sha256(p)}\n".encode())
    return h.hexdigest()


def digest(path: str | Path, known: Digest | None = None) -> Digest:
    """The digest of ``path``; ``known`` is returned as is when its stamp still holds."""
    p = Path(path)
    current = stamp(p)
    if known is not None and known.stamp == current:
        return known
    return Digest(sha256=_sha256(p), stamp=current)
