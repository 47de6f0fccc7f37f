"""The LM head alone, forward and backward, each way failforge can tile it on a CPU.

TRL's fused LM head (``_ChunkedLogProbFunction``) over SmolLM2-135M's vocabulary
(49,152 × 576, random hidden states and targets), asked for what a TRL step asks
(log-probabilities, entropy, top-1 flags, mean logits), then backward through the
log-probabilities. All three sides fold the tiles in place (``lm_head_fold.in_place_folds``):

- ``projected twice, 4,096 columns``: TRL's backward pass, which projects every tile again;
- ``kept, 4,096 columns``: the tiles kept for the backward pass (``lm_head_kept``) and
  ``narrow_cpu_tiles``: what failforge's SFT and DPO steps run;
- ``kept, 32,768 columns``: the kept tiles at TRL's own tile width.

Each side runs once to allocate, then twice timed; the sides alternate round by round
in one process, so a busy machine slows them alike. It prints the median seconds of
each side per token count.

    .venv/bin/python bench/lm_head_tiles.py [--rounds 4] [--tokens 150 452 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import trl.trainer.utils as trl_utils

from failforge.train.lm_head_fold import in_place_folds, narrow_cpu_tiles
from failforge.train.lm_head_kept import kept_cpu_tiles

VOCAB, HIDDEN = 49_152, 576
OUTPUTS = ("log_probs", "entropy", "is_top1", "mean_logits")
SIDES = {
    "projected twice, 4,096 columns": (in_place_folds, narrow_cpu_tiles),
    "kept, 4,096 columns": (in_place_folds, kept_cpu_tiles, narrow_cpu_tiles),
    "kept, 32,768 columns": (in_place_folds, kept_cpu_tiles),
}


def one_pass(weight: torch.Tensor, tokens: int) -> None:
    hidden = torch.randn(tokens, HIDDEN).requires_grad_(True)
    targets = torch.randint(0, VOCAB, (tokens,))
    # TRL's arguments: hidden, weight, bias, targets, temperature, chunk size, soft cap, scale, outputs
    log_probs, *_ = trl_utils._ChunkedLogProbFunction.apply(
        hidden, weight, None, targets, 1.0, 32_768, None, 1.0, OUTPUTS
    )
    (log_probs * torch.linspace(-1, 2, tokens)).sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tokens", type=int, nargs="+", default=[150, 452, 1000])
    args = ap.parse_args()
    torch.manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN) * 0.05
    print("| tokens | " + " | ".join(SIDES) + " |")
    print("|---|" + "---|" * len(SIDES))
    for tokens in args.tokens:
        seconds: dict[str, list[float]] = {name: [] for name in SIDES}
        for _ in range(args.rounds):
            for name, contexts in SIDES.items():
                with contextlib.ExitStack() as stack:
                    for ctx in contexts:
                        stack.enter_context(ctx())
                    one_pass(weight, tokens)  # the first call allocates
                    t0 = time.perf_counter()
                    one_pass(weight, tokens)
                    one_pass(weight, tokens)
                    seconds[name].append((time.perf_counter() - t0) / 2)
        print(f"| {tokens} | " + " | ".join(f"{statistics.median(v):.3f} s" for v in seconds.values()) + " |",
              flush=True)


if __name__ == "__main__":
    main()
