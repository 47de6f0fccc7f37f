"""Throughput of the llama.cpp backend: raw calls vs failforge's full path, batched vs one at a time.

(a) raw:  ``LlamaCppModel.complete`` on every prompt.
(b) full: the same prompts through a ``CachedModel`` over a fresh ``RunStore`` in a
    temporary run directory (cache lookups, one commit per chunk) plus one record
    per answer written with ``store.put_records``.
The two alternate round by round on the same loaded model, so a busy machine slows
both alike; the best round of each is reported, with the ratio full/raw.
Then the same prompts at ``--batch-size`` and at batch size 1.

    .venv/bin/python bench/throughput.py --prompts 32 --max-tokens 64
"""

from __future__ import annotations

import argparse
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


def run_full(model, requests, texts: list[str]) -> tuple[int, float]:
    from failforge.run.cached import CachedModel
    from failforge.run.store import RunStore

    with tempfile.TemporaryDirectory(prefix="failforge-bench-") as run_dir:
        store = RunStore(Path(run_dir) / "store.sqlite")
        try:
            t0 = time.perf_counter()
            cached = CachedModel(model, store)
            outs = cached.complete(requests)
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
    ap.add_argument("--rounds", type=int, default=2, help="alternating raw/full rounds; the best of each is kept")
    ap.add_argument("--skip-single", action="store_true", help="skip the batch-size-1 comparison")
    args = ap.parse_args(argv)

    from failforge.models.base import SamplingParams, as_conversation, expand
    from failforge.models.llamacpp import LlamaCppModel
    from failforge.models.spec import ModelSpec

    texts = prompts(args.prompts)
    requests = expand([as_conversation(t) for t in texts], SamplingParams(max_tokens=args.max_tokens))
    spec = ModelSpec(model=args.model, batch_size=args.batch_size, n_threads=args.threads)
    model = LlamaCppModel(spec)
    print(f"model {args.model}  prompts {args.prompts}  max_tokens {args.max_tokens}  greedy"
          f"  batch_size {args.batch_size}  threads {args.threads or 'all'}")
    model.complete(requests[:1])  # warm-up: first decode allocates buffers

    best = {"raw": 0.0, "full": 0.0}
    for r in range(args.rounds):
        for name in ("raw", "full") if r % 2 == 0 else ("full", "raw"):
            toks, dt = run_raw(model, requests) if name == "raw" else run_full(model, requests, texts)
            best[name] = max(best[name], toks / dt)
            print(f"  round {r + 1} {name:4s}: {toks} tokens in {dt:6.2f} s = {toks / dt:7.1f} tokens/s")
    ratio = best["full"] / best["raw"]
    print(f"raw backend  {best['raw']:7.1f} tokens/s")
    print(f"full path    {best['full']:7.1f} tokens/s   ratio full/raw = {ratio:.3f} (target >= 0.95)")

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
