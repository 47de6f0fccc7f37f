"""Write exported rows as JSONL, Parquet or a ``datasets`` DatasetDict.

Everything is written to a temporary path beside the target and renamed into
place, so ``-o PATH`` either holds a complete export or what it held before.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from failforge.errors import ConfigError, FailforgeError
from failforge.export.rows import SCHEMAS

FORMATS: tuple[str, ...] = ("jsonl", "parquet", "hf")
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet"}
#: files an earlier export leaves in a folder; only such a folder may be replaced
_EXPORT_FILES = {f"{w}{s}" for w in SCHEMAS for s in SUFFIX.values()} | {"dataset_dict.json", *SCHEMAS}


def arrow_schema(what: str):
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
        "list<message>": pa.list_(message),
    }
    return pa.schema([(name, types[t]) for name, t in SCHEMAS[what]])


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_parquet(rows: list[dict[str, Any]], what: str, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema(what)), path)


def dataset_dict(tables: dict[str, list[dict[str, Any]]]):
    """One split per exported kind (``pairs``, ``sft``, ``failures``, ``analyses``) that
    has rows: ``datasets`` saves an empty split that ``load_from_disk`` cannot read back,
    so a kind the run has no rows of (e.g. a ReverseGen run's analyses) is left out."""
    import datasets

    return datasets.DatasetDict(
        {
            what: datasets.Dataset.from_list(rows, features=datasets.Features.from_arrow_schema(arrow_schema(what)))
            for what, rows in tables.items()
            if rows
        }
    )


def write_export(tables: dict[str, list[dict[str, Any]]], fmt: str, out: Path, as_folder: bool, quiet: bool = False) -> Path:
    """Write the tables. One jsonl/parquet table goes to the file ``out``; several
    (or ``hf``) go into the folder ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown value {fmt!r} (choose from {', '.join(FORMATS)})")
    out = Path(out)
    folder = as_folder or fmt == "hf"
    _check_target(out, folder)
    out.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        if fmt == "hf":
            dd = dataset_dict(tables)
            with _progress_bars(not quiet):
                dd.save_to_disk(str(tmp))
            return
        targets = {w: (tmp / f"{w}{SUFFIX[fmt]}" if folder else tmp) for w in tables}
        if folder:
            tmp.mkdir()
        for w, rows in tables.items():
            write_jsonl(rows, targets[w]) if fmt == "jsonl" else write_parquet(rows, w, targets[w])

    _atomic(out, fill)
    return out


def push_to_hub(out: Path, repo: str, private: bool = True, quiet: bool = False) -> None:
    """Push a saved DatasetDict; any hub or network problem becomes one line."""
    import datasets

    try:
        with _progress_bars(not quiet):
            datasets.load_from_disk(str(out)).push_to_hub(repo, private=private)
    except Exception as e:  # offline, no token, no such org, timeout: all user-fixable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FailforgeError(
            f"--push-to-hub {repo}: the Hugging Face Hub is not reachable or refused the push "
            f"({type(e).__name__}{': ' + msg[:200] if msg else ''}); the local export at {out} is complete"
        ) from e


@contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            enable_progress_bars()


def _check_target(out: Path, folder: bool) -> None:
    if out.is_symlink() or (out.exists() and not folder and out.is_dir()):
        raise ConfigError(f"-o {out}: is a directory or a link; give a file path")
    if folder and out.exists():
        if not out.is_dir():
            raise ConfigError(f"-o {out}: exists and is a file; this export needs a folder")
        foreign = [p.name for p in out.iterdir() if p.name not in _EXPORT_FILES]
        if foreign:
            raise ConfigError(f"-o {out}: folder exists and holds other files ({foreign[0]}, ...); give a new or empty folder")


def _atomic(out: Path, fill: Callable[[Path], None]) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        fill(tmp)
        if out.is_dir():  # swap folders: rename the old one away, then drop it
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


__all__ = ["FORMATS", "arrow_schema", "dataset_dict", "push_to_hub", "write_export", "write_jsonl", "write_parquet"]
