"""Load rows from any source: a catalogue name, a local file, or ``hf:NAME`` on the hub.

``load_dataset_source`` returns every row; ``failforge.data.load`` adds sampling.
Every row carries ``_source`` (name, package, version, licence, file) so it can be
traced after it has been mixed with others.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from failforge.data.base import SOURCE_KEY, Provenance, Row
from failforge.data.catalog import CATALOG
from failforge.data.pypi import read_cached
from failforge.data.sources import jsonl_records
from failforge.errors import DatasetError
from failforge.models.base import file_sha256
from failforge.run.inputs import note_file, note_value

HUB_PREFIX = "hf:"
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _json_safe(value: Any) -> Any:
    """Parquet/hub values as plain JSON types (numpy scalars and arrays included)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return jsonl_records(str(path), path.read_bytes())


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import csv

    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise DatasetError(f"{path}: empty CSV (no header line)")
        rows = list(reader)
    for i, row in enumerate(rows, 2):
        if None in row:
            raise DatasetError(f"{path}:{i}: more fields than the header has columns")
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from None


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def load_local(path: str | Path) -> list[Row]:
    """Rows of a local JSONL, JSON (list of objects), CSV or Parquet file."""
    p = Path(path).expanduser()
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise DatasetError(f"{p}: unsupported file type {p.suffix!r} (use {', '.join(LOCAL_SUFFIXES)})")
    if p.is_dir():
        raise DatasetError(f"{p}: is a directory, expected a file")
    if not p.is_file():
        raise DatasetError(f"{p}: no such file")
    sha256 = file_sha256(str(p))
    note_file("data file", p, sha256)
    source = Provenance(name=p.stem, file=str(p.resolve()), sha256=sha256).model_dump()
    try:
        rows = reader(p)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{p}: invalid UTF-8 at byte {e.start}") from None
    return [{**_json_safe(row), SOURCE_KEY: source} for row in rows]


def parse_hub_ref(ref: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG][@SPLIT]`` -> (name, config, split); split defaults to "train"."""
    body = ref[len(HUB_PREFIX) :]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name:
        raise DatasetError(f"{ref!r}: expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:openai/gsm8k:main@test")
    return name, (config or None), (split or "train")


def load_hub(ref: str) -> list[Row]:
    """Rows of a Hugging Face hub dataset through the ``datasets`` library."""
    name, config, split = parse_hub_ref(ref)
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the library raises many types (ConnectionError, HfHubHTTPError, ValueError...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DatasetError(f"{ref}: could not load from the Hugging Face hub: {first}") from None
    note_value("dataset", ref, lambda: _rows_sha256(ds))
    info = ds.info
    source = Provenance(
        name=name,
        version=str(info.version) if info.version else None,
        licence=info.license or None,
        file=f"hf:{name}:{config or 'default'}@{split}",
    ).model_dump()
    return [{**_json_safe(row), SOURCE_KEY: source} for row in ds]


def _rows_sha256(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(_json_safe(row), sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def load_dataset_source(ref: str | Path, cache_dir: Path | None = None) -> list[Row]:
    """All rows of a catalogue dataset, a local file, or ``hf:NAME``."""
    text = str(ref)
    if text.startswith(HUB_PREFIX):
        return load_hub(text)
    if text in CATALOG:
        note_value("dataset", text, CATALOG[text].archive.sha256)
        return read_cached(CATALOG[text], cache_dir)
    if Path(text).suffix.lower() in LOCAL_SUFFIXES or Path(text).expanduser().exists():
        return load_local(text)
    known = ", ".join(sorted(CATALOG))
    raise DatasetError(f"dataset {text!r}: not a known name ({known}), a local file, or hf:NAME")
