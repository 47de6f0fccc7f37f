"""distilabel's workload, four ways, in one run: tokens per second.

The workload: 48 instructions -> an LLM rewrites each -> the LLM answers each
rewritten instruction (two stages, greedy), with the embedded SmolLM2-135M GGUF on
2 threads. The sides, each loaded once, run one after the other in every round, in
an order that rotates from round to round, so a busy machine slows all of them alike;
the medians over the rounds are reported.

- ``llama-cpp-python``: its ``Llama.create_chat_completion``, one request at a time
  (what a plain loop gets).
- ``backend``: failforge's llama.cpp backend, ``LlamaCppModel.complete`` on all 48
  requests of a stage at once (its continuous batch, ``--batch-size`` sequences): the
  best the backend itself gives, with no store.
- ``failforge``: the full path: ``CachedModel.generate`` over a fresh run store
  (cache look-ups, every answer committed as it finishes), plus one record per item.
- ``distilabel``: distilabel's ``TextGeneration`` task on its ``LlamaCppLLM``, called
  directly with all 48 rows as one batch (its best setting here: no ``Pipeline``, so
  no worker processes or per-step model loads are timed). It runs only when
  distilabel is installed; it is not a failforge dependency:

      .venv/bin/pip install distilabel==1.5.3 requests

Texts are not compared: two llama.cpp paths sum in a different order and give
different greedy texts in many rows on this flat 135M model. Tokens per second
(completion tokens over wall time, both stages) are.

    flock /tmp/failforge-heavy.lock .venv/bin/python bench/vs_distilabel.py --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = [
    "the water cycle", "how vaccines work", "the French Revolution", "black holes", "compound interest",
    "photosynthesis", "the rules of chess", "how to bake bread", "plate tectonics", "the stock market",
    "machine learning", "the Roman Empire", "climate change", "how airplanes fly", "the human immune system",
    "renewable energy", "the history of jazz", "DNA replication", "supply and demand", "the Great Wall of China",
    "ocean tides", "how a computer boots", "the printing press", "honey bees", "volcanoes",
    "the speed of light", "recycling plastic", "the Olympic games", "earthquakes", "the Moon landing",
    "coffee brewing", "the periodic table", "electric cars", "the Internet", "rainforests",
    "the Renaissance", "how batteries work", "time zones", "the human heart", "glaciers",
    "bicycle gears", "the Silk Road", "solar eclipses", "antibiotics", "the metric system",
    "migratory birds", "the Pythagorean theorem", "lighthouses",
]
REWRITE = (
    "Rewrite the following instruction so that it is more specific and detailed. "
    "Reply with the rewritten instruction only.\n\nInstruction: {instruction}"
)


def instructions(n: int) -> list[str]:
    return [f"Explain {SUBJECTS[i % len(SUBJECTS)]} in simple terms." for i in range(n)]


class Workload:
    def __init__(self, n: int, rewrite_tokens: int, answer_tokens: int):
        self.instructions = instructions(n)
        self.rewrite_tokens = rewrite_tokens
        self.answer_tokens = answer_tokens

    def second(self, originals: list[str], rewrites: list[str]) -> list[str]:
        # an empty rewrite falls back to the original instruction, on every side alike
        return [r.strip() or o for o, r in zip(originals, rewrites)]


# --- the sides: each returns completion tokens generated -------------------------------------
class LlamaCppPython:
    name = "llama-cpp-python"

    def __init__(self, path: str, threads: int, n_ctx: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, verbose=False)

    def _one(self, text: str, max_tokens: int) -> tuple[str, int]:
        out = self.llm.create_chat_completion(messages=[{"role": "user", "content": text}], temperature=0.0, max_tokens=max_tokens)
        return out["choices"][0]["message"]["content"] or "", int(out["usage"]["completion_tokens"])

    def run(self, w: Workload) -> int:
        first = [self._one(REWRITE.format(instruction=i), w.rewrite_tokens) for i in w.instructions]
        second = [self._one(t, w.answer_tokens) for t in w.second(w.instructions, [t for t, _ in first])]
        return sum(n for _, n in first) + sum(n for _, n in second)


class Backend:
    name = "backend"

    def __init__(self, model):
        self.model = model

    def _stage(self, texts: list[str], max_tokens: int):
        from failforge.models.base import SamplingParams, as_conversation, expand

        return self.model.complete(expand([as_conversation(t) for t in texts], SamplingParams(max_tokens=max_tokens)))

    def run(self, w: Workload) -> int:
        first = self._stage([REWRITE.format(instruction=i) for i in w.instructions], w.rewrite_tokens)
        second = self._stage(w.second(w.instructions, [c.text for c in first]), w.answer_tokens)
        return sum(c.completion_tokens for c in first + second)


class Failforge:
    name = "failforge"

    def __init__(self, model):
        self.model = model

    def run(self, w: Workload) -> int:
        from failforge.models.base import SamplingParams
        from failforge.run.cached import CachedModel
        from failforge.run.store import RunStore

        with tempfile.TemporaryDirectory(prefix="failforge-bench-") as run_dir:
            store = RunStore(Path(run_dir) / "store.sqlite")
            cached = CachedModel(self.model, store)
            try:
                first = [o[0] for o in cached.generate([REWRITE.format(instruction=i) for i in w.instructions],
                                                       SamplingParams(max_tokens=w.rewrite_tokens))]  # fmt: skip
                store.put_records("rewrite", [(f"i{k}", {"instruction": i, "rewrite": c.text}) for k, (i, c) in enumerate(zip(w.instructions, first))])
                asks = w.second(w.instructions, [c.text for c in first])
                second = [o[0] for o in cached.generate(asks, SamplingParams(max_tokens=w.answer_tokens))]
                store.put_records("answer", [(f"i{k}", {"instruction": a, "answer": c.text}) for k, (a, c) in enumerate(zip(asks, second))])
                assert cached.sent == 2 * len(w.instructions) or len(set(asks)) < len(asks), "a fresh store answers nothing"
            finally:
                store.close()
        return sum(c.completion_tokens for c in first + second)


class Distilabel:
    name = "distilabel"

    def __init__(self, path: str, threads: int, n_ctx: int, w: Workload):
        from distilabel.models.llms import LlamaCppLLM
        from distilabel.steps.tasks import TextGeneration

        llm = LlamaCppLLM(
            model_path=path, n_ctx=n_ctx, verbose=False,
            extra_kwargs={"n_threads": threads, "n_threads_batch": threads},
            generation_kwargs={"max_new_tokens": w.rewrite_tokens, "temperature": 0.0},
        )  # fmt: skip
        # one task for both stages, so the model is loaded once (a Pipeline would load it per step)
        self.task = TextGeneration(name="gen", llm=llm, input_batch_size=len(w.instructions), add_raw_output=False, add_raw_input=False)
        self.task.load()

    def _stage(self, texts: list[str], max_tokens: int) -> tuple[list[str], int]:
        self.task.llm.generation_kwargs = {"max_new_tokens": max_tokens, "temperature": 0.0}
        rows = [r for batch in self.task.process([{"instruction": t} for t in texts]) for r in batch]
        tokens = 0
        for r in rows:
            n = ((r.get("distilabel_metadata") or {}).get("statistics_gen") or {}).get("output_tokens", 0)
            tokens += sum(n) if isinstance(n, list) else int(n or 0)
        return [r.get("generation") or "" for r in rows], tokens

    def run(self, w: Workload) -> int:
        rewrites, a = self._stage([REWRITE.format(instruction=i) for i in w.instructions], w.rewrite_tokens)
        _, b = self._stage(w.second(w.instructions, rewrites), w.answer_tokens)
        return a + b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="known name or GGUF path")
    ap.add_argument("--instructions", type=int, default=48)
    ap.add_argument("--rewrite-tokens", type=int, default=64)
    ap.add_argument("--answer-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="failforge's llama.cpp batch (sequences decoded together)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sides", default="llama-cpp-python,backend,failforge,distilabel", help="comma-separated subset")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(wanted) - {"llama-cpp-python", "backend", "failforge", "distilabel"}
    if unknown or not wanted or args.rounds < 1 or args.instructions < 1:
        print(f"error: --sides: unknown {sorted(unknown)}" if unknown else "error: --rounds, --instructions and --sides must not be empty or zero", file=sys.stderr)
        return 2

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from failforge.models.llamacpp import LlamaCppModel
    from failforge.models.registry import resolve_weights
    from failforge.models.spec import ModelSpec

    path = str(resolve_weights(args.model))
    w = Workload(args.instructions, args.rewrite_tokens, args.answer_tokens)
    sides = []
    model = None
    if {"backend", "failforge"} & set(wanted):
        model = LlamaCppModel(ModelSpec(model=args.model, batch_size=args.batch_size, n_threads=args.threads, n_ctx=args.n_ctx))
    for name in wanted:
        if name == "llama-cpp-python":
            sides.append(LlamaCppPython(path, args.threads, args.n_ctx))
        elif name == "backend":
            sides.append(Backend(model))
        elif name == "failforge":
            sides.append(Failforge(model))
        elif name == "distilabel":
            if importlib.util.find_spec("distilabel") is None:
                print("distilabel is not installed: its side is skipped (.venv/bin/pip install distilabel==1.5.3 requests)")
                continue
            sides.append(Distilabel(path, args.threads, args.n_ctx, w))
    print(f"{args.model}: {args.instructions} instructions -> rewrite ({args.rewrite_tokens} tokens max) -> answer "
          f"({args.answer_tokens} max), greedy, {args.threads} threads, failforge batch {args.batch_size}, {args.rounds} rounds")  # fmt: skip

    # warm-up: the first decode of each side allocates its buffers
    warm = Workload(2, 4, 4)
    for s in sides:
        s.run(warm)

    speeds: dict[str, list[float]] = {s.name: [] for s in sides}
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for s in order:
            t0 = time.perf_counter()
            tokens = s.run(w)
            dt = time.perf_counter() - t0
            speeds[s.name].append(tokens / dt)
            print(f"  round {r + 1} {s.name:17s} {tokens:6d} tokens in {dt:6.1f} s = {tokens / dt:6.1f} tokens/s", flush=True)

    med = {k: statistics.median(v) for k, v in speeds.items()}
    base = med.get("llama-cpp-python")
    print(f"\n{'side':17s} | median tokens/s | rounds (tokens/s)" + (" | vs llama-cpp-python" if base else ""))
    for k, v in med.items():
        rounds = " ".join(f"{x:.1f}" for x in speeds[k])
        print(f"{k:17s} | {v:15.1f} | {rounds}" + (f" | {v / base:.2f}x" if base else ""))
    if "backend" in med and "failforge" in med:
        print(f"failforge full path / backend's own batched API: {med['failforge'] / med['backend']:.3f} (goal >= 0.95)")
    if model is not None:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
