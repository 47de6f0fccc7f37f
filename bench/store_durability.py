"""What durable call commits cost: N cached completions written to a fresh run store
with the calls committed under ``synchronous=NORMAL`` and under ``FULL``, in
alternating rounds, one call per commit (the openai backend) and 8 per commit (a
llama.cpp batch). Prints the median milliseconds per commit of each.

    .venv/bin/python bench/store_durability.py [--n 300] [--rounds 5] [--dir .]

The store is written under --dir (default: the current folder), so the figure is for
that folder's filesystem; a tmpfs would show no cost at all.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from failforge.models.base import Completion, Message, Request, SamplingParams
from failforge.run.store import RunStore

ANSWER = "The answer is 12. " * 24  # about 430 characters, a short model answer


def write_calls(path: Path, synchronous: str, n: int, per_commit: int) -> float:
    """Seconds to commit ``n`` calls, ``per_commit`` at a time, into a new store at ``path``."""
    store = RunStore(path)
    store.calls_synchronous = synchronous
    items = []
    for i in range(n):
        req = Request(messages=(Message(role="user", content=f"What is {i} + 5?"),), params=SamplingParams(seed=i))
        items.append((req.key("fp"), req, Completion(text=ANSWER, prompt_tokens=30, completion_tokens=100, latency_s=0.5)))
    t = time.perf_counter()
    for k in range(0, n, per_commit):
        store.put_calls("fp", "bench", items[k : k + per_commit])
    seconds = time.perf_counter() - t
    store.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=".", help="folder to write the stores in")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=".store-bench-", dir=args.dir) as tmp:
        for per_commit in (1, 8):
            ms: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
            for r in range(args.rounds):
                order = ("NORMAL", "FULL") if r % 2 == 0 else ("FULL", "NORMAL")
                for mode in order:
                    path = Path(tmp) / f"{mode}-{per_commit}-{r}.sqlite"
                    seconds = write_calls(path, mode, args.n, per_commit)
                    ms[mode].append(1000 * seconds / (args.n / per_commit))
            normal, full = statistics.median(ms["NORMAL"]), statistics.median(ms["FULL"])
            print(
                f"{per_commit} call(s) per commit, {args.n} calls x {args.rounds} rounds: "
                f"NORMAL {normal:.2f} ms/commit, FULL {full:.2f} ms/commit, "
                f"FULL adds {full - normal:.2f} ms per commit ({(full - normal) / per_commit:.2f} ms per call); "
                f"rounds NORMAL {[round(x, 2) for x in ms['NORMAL']]}, FULL {[round(x, 2) for x in ms['FULL']]}"
            )


if __name__ == "__main__":
    main()
