"""Seconds per training step on this machine: LoRA SFT and DPO on the bundled SmolLM2-135M.

Batch 4 x 256 tokens. Our per-device settings (fp32, no gradient checkpointing on a
CPU) against TRL's defaults (bf16 autocast + gradient checkpointing), which get
fewer steps because they are slow. Prints one line per configuration and the
ratio; the load average is printed too, since a shared machine skews timings.

    .venv/bin/python bench/train_step.py [--steps 3] [--default-steps 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from failforge.models.registry import resolve_weights
from failforge.train import TrainSettings, train_dpo, train_sft, version_from_gguf
from failforge.train.callbacks import StepRecorder  # noqa: F401  (imports transformers before timing)

SEQ = 256
BATCH = 4
# a long assistant answer so that each row fills the 256-token window after truncation
LONG = " ".join(f"Step {i}: add {i} apples to the basket and count them again carefully." for i in range(40))


def sft_rows(n: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"Explain counting, case {i}."}, {"role": "assistant", "content": LONG}]}
        for i in range(n)
    ]


def dpo_rows(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Write a long plan, case {i}."}],
            "chosen": LONG,
            "rejected": LONG.replace("apples", "pears"),
        }
        for i in range(n)
    ]


def seconds_per_step(train, base, rows, settings, work: Path, name: str) -> list[float]:
    from failforge.run.store import RunStore

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    store = RunStore(work / f"{name}.sqlite")
    train(base, rows, settings, out, store=store, name=name, quiet=True)
    secs = [s["seconds"] for s in store.train_steps(name)]
    store.close()
    return secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="steps per configuration with our settings (first is warm-up)")
    ap.add_argument("--default-steps", type=int, default=2, help="steps with TRL's defaults (bf16 + checkpointing)")
    args = ap.parse_args()

    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    work = Path(tempfile.mkdtemp(prefix="failforge-bench-"))
    common = {"batch_size": BATCH, "max_length": SEQ, "lora": {"r": 16}, "export_gguf": False, "save_steps": 10_000}
    results: dict[str, float] = {}
    try:
        for kind, fn, rows in [("sft", train_sft, sft_rows(BATCH * 8)), ("dpo", train_dpo, dpo_rows(BATCH * 8))]:
            for label, extra, steps in [
                ("ours (fp32, no checkpointing)", {}, args.steps),
                ("TRL defaults (bf16 + checkpointing)", {"precision": "bf16", "gradient_checkpointing": True}, args.default_steps),
            ]:
                settings = TrainSettings(kind=kind, max_steps=steps, **common, **extra)
                t0 = time.perf_counter()
                secs = seconds_per_step(fn, base, rows, settings, work, f"{kind}-{len(results)}")
                timed = secs[1:] or secs  # the first step pays one-off costs (allocation, thread pools)
                results[f"{kind} {label}"] = statistics.median(timed)
                print(
                    f"{kind.upper():4} {label:38} {statistics.median(timed):7.2f} s/step"
                    f"  (steps: {', '.join(f'{s:.2f}' for s in secs)}; wall {time.perf_counter() - t0:.0f} s;"
                    f" load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        for kind in ("sft", "dpo"):
            ours = results[f"{kind} ours (fp32, no checkpointing)"]
            trl = results[f"{kind} TRL defaults (bf16 + checkpointing)"]
            print(f"{kind.upper():4} TRL defaults / ours: {trl / ours:.1f}x slower")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
