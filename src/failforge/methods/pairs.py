"""Preference pairs from judged instructions: failure-inducing (chosen) vs not (rejected).

ReverseGen pairs instructions sampled from the same few-shot prompt where it can,
so the only difference DPO sees is what made the target fail. Instructions left
unpaired (a prompt whose samples all failed or all passed, or more of one outcome
than the other) are paired across prompts of the same iteration, each instruction
used once; a cross-prompt pair keeps the chosen instruction's prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Judged:
    prompt: str
    instruction: str
    failed: bool
    attempt_id: str


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: Judged
    rejected: Judged
    same_prompt: bool


def build_pairs(items: list[Judged], rng: random.Random, max_per_prompt: int = 2) -> list[Pair]:
    by_prompt: dict[str, list[Judged]] = {}
    for it in items:
        by_prompt.setdefault(it.prompt, []).append(it)
    pairs: list[Pair] = []
    unpaired_fail: list[Judged] = []
    unpaired_pass: list[Judged] = []
    for prompt, group in by_prompt.items():
        fails = [g for g in group if g.failed]
        passes = [g for g in group if not g.failed]
        k = min(len(fails), len(passes), max_per_prompt)
        for f, p in zip(fails[:k], passes[:k]):
            pairs.append(Pair(prompt, f, p, True))
        unpaired_fail += fails[k:]
        unpaired_pass += passes[k:]
    # Cross-prompt pairs: the chosen instruction keeps its own prompt.
    rng.shuffle(unpaired_pass)
    for f, p in zip(unpaired_fail, unpaired_pass):
        pairs.append(Pair(f.prompt, f, p, False))
    return pairs
