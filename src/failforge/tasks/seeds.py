"""Seed rows for a task: a packaged seed file by short name, a catalogue dataset, or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEEDS_DIR = Path(__file__).resolve().parent.parent / "resources" / "seeds"

#: seed files failforge ships (small, synthetic, licence: the project's own)
PACKAGED = {
    "arithmetic": SEEDS_DIR / "arithmetic.jsonl",
}


def load_rows(source: str, n: int | None, seed: int) -> list[dict[str, Any]]:
    from failforge.data import load

    return load(PACKAGED.get(source, source), n=n, seed=seed)
