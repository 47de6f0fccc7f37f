"""Throughput of the llama.cpp backend: raw calls vs failforge's full path, batched vs one at a time.

(a) raw:     ``LlamaCppModel.complete`` on every prompt (the backend's own continuous batch).
(b) full:    the same prompts through a ``CachedModel`` over a fresh ``RunStore`` in a
             temporary run directory (cache look-ups, every answer committed as it
             finishes, no barrier) plus one record per answer (``store.put_records``).
(c) chunked: the full path as it was before, for comparison: the run cache handed
             the backend ``--batch-size`` requests at a time and waited for the whole
             chunk before sending the next, so the batch drained at every boundary.
The three alternate round by round on the same loaded model, so a busy machine slows
all alike; the median and best round of each are reported, with the ratios to raw.
Then the same prompts at ``--batch-size`` and at batch size 1.

    flock /tmp/failforge-heavy.lock .venv/bin/python bench/throughput.py --prompts 32 --max-tokens 64
    flock /tmp/failforge-heavy.lock .venv/bin/python bench/throughput.py --prompts 32 --max-tokens 96 --mixed --skip-single
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

TOPICS = [
    "the ocean", "volcanoes", "honey bees", "the moon", "chess", "bread baking", "rainforests", "trains",
    "jazz music", "glaciers", "the printing press", "owls", "solar power", "coffee", "the Roman Empire",
    "octopuses", "deserts", "bicycles", "photosynthesis", "lighthouses", "origami", "penguins", "comets",
    "the human heart", "windmills", "tea ceremonies", "earthquakes", "libraries", "sailing", "mushrooms",
    "the alphabet", "thunderstorms",
]


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}." + (f" (variant {i // len(TOPICS)})" if i >= len(TOPICS) else "") for i in range(n)]


def run_raw(model, requests) -> tuple[int, float]:
    t0 = time.perf_counter()
    outs = model.complete(requests)
    return sum(c.completion_tokens for c in outs), time.perf_counter() - t0


def run_full(model, requests, texts: list[str], chunk: int | None = None) -> tuple[int, float]:
    from failforge.run.cached import CachedModel
    from failforge.run.store import RunStore

    with tempfile.TemporaryDirectory(prefix="failforge-bench-") as run_dir:
        store = RunStore(Path(run_dir) / "store.sqlite")
        try:
            t0 = time.perf_counter()
            cached = CachedModel(model, store)
            if chunk is None:
                outs = cached.complete(requests)
            else:  # the barrier of old: one chunk must end before the next starts
                outs = [c for i in range(0, len(requests), chunk) for c in cached.complete(requests[i : i + chunk])]
            store.put_records(
                "answer",
                [(f"p{i}", {"prompt": p, "response": c.text, "tokens": c.completion_tokens}) for i, (p, c) in enumerate(zip(texts, outs))],
            )
            dt = time.perf_counter() - t0
            assert cached.sent == len(requests), "a fresh store must not serve anything from cache"
        finally:
            store.close()
    return sum(c.completion_tokens for c in outs), dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="known name or GGUF path")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of raw/full/chunked, in rotating order")
    ap.add_argument("--skip-single", action="store_true", help="skip the batch-size-1 comparison")
    ap.add_argument("--mixed", action="store_true", help="max_tokens of 1/4, 2/4, 3/4 and 4/4 of --max-tokens in turn")
    args = ap.parse_args(argv)

    from failforge.models.base import SamplingParams, as_conversation, expand
    from failforge.models.llamacpp import LlamaCppModel
    from failforge.models.spec import ModelSpec

    texts = prompts(args.prompts)
    if args.mixed:
        # answers of different lengths, as real ones are: a quarter, half, three quarters
        # or all of --max-tokens, so a chunk's slots free at different steps
        requests = [
            r
            for i, t in enumerate(texts)
            for r in expand([as_conversation(t)], SamplingParams(max_tokens=max(1, args.max_tokens * (1 + i % 4) // 4)))
        ]
    else:
        requests = expand([as_conversation(t) for t in texts], SamplingParams(max_tokens=args.max_tokens))
    spec = ModelSpec(model=args.model, batch_size=args.batch_size, n_threads=args.threads)
    model = LlamaCppModel(spec)
    print(f"model {args.model}  prompts {args.prompts}  max_tokens {args.max_tokens}{' (mixed)' if args.mixed else ''}  greedy"
          f"  batch_size {args.batch_size}  threads {args.threads or 'all'}")
    model.complete(requests[:1])  # warm-up: first decode allocates buffers

    speeds: dict[str, list[float]] = {"raw": [], "full": [], "chunked": []}
    names = list(speeds)
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            if name == "raw":
                toks, dt = run_raw(model, requests)
            else:
                toks, dt = run_full(model, requests, texts, None if name == "full" else args.batch_size)
            speeds[name].append(toks / dt)
            print(f"  round {r + 1} {name:7s}: {toks} tokens in {dt:6.2f} s = {toks / dt:7.1f} tokens/s", flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    best = {k: max(v) for k, v in speeds.items()}
    print(f"raw backend  median {med['raw']:7.1f} tokens/s  best {best['raw']:7.1f}")
    print(f"full path    median {med['full']:7.1f} tokens/s  best {best['full']:7.1f}"
          f"   full/raw = {med['full'] / med['raw']:.3f} (medians; target >= 0.95)")
    print(f"chunked      median {med['chunked']:7.1f} tokens/s  best {best['chunked']:7.1f}"
          f"   chunked/raw = {med['chunked'] / med['raw']:.3f}   full/chunked = {med['full'] / med['chunked']:.3f}")

    if not args.skip_single:
        single = LlamaCppModel(spec.model_copy(update={"batch_size": 1}))
        toks1, dt1 = run_raw(single, requests)
        single.close()
        toks_b, dt_b = run_raw(model, requests)
        print(f"batch_size {args.batch_size:2d}: {toks_b / dt_b:7.1f} tokens/s   batch_size  1: {toks1 / dt1:7.1f} tokens/s"
              f"   speed-up {(toks_b / dt_b) / (toks1 / dt1):.2f}x")
    model.close()


if __name__ == "__main__":
    main()
