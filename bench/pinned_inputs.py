"""What pinning inputs costs: the bundled GGUF (about 98 MB) pinned by a fresh run with
a cold hash cache, by a fresh run with a warm one, and re-checked by a resume; and the
pre-flight read of its GGUF header.

    .venv/bin/python bench/pinned_inputs.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FAILFORGE_CACHE"] = cache  # a cold on-disk hash cache
        from failforge.models.gguf_check import check_gguf
        from failforge.models.registry import resolve_weights
        from failforge.run.inputs import InputLedger

        weights = resolve_weights("smollm2-135m-instruct")
        size_mb = Path(weights).stat().st_size / 1e6

        fresh = InputLedger()
        with fresh.active():
            cold = timed(lambda: resolve_weights("smollm2-135m-instruct"))
        recorded = {k: p.model_dump() for k, p in fresh.pins.items()}
        warm_ledger = InputLedger()
        with warm_ledger.active():
            warm = timed(lambda: resolve_weights("smollm2-135m-instruct"))
        resumed = InputLedger(recorded)
        recheck = timed(resumed.recheck)
        header = min(timed(lambda: check_gguf(weights)) for _ in range(5))
    print(f"weights: {weights} ({size_mb:.0f} MB)")
    print(f"fresh run, cold hash cache: {cold:.3f} s")
    print(f"fresh run, warm hash cache: {warm:.4f} s")
    print(f"resume re-check (size and mtime unchanged): {recheck:.4f} s")
    print(f"pre-flight GGUF header check: {header:.4f} s")


if __name__ == "__main__":
    main()
