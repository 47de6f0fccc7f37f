"""A small LM head with ties for the fused-head tests (in-place folds, kept tiles)."""

from __future__ import annotations

import torch

#: the outputs TRL's DPO asks its fused LM head for
OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def head(n=40, h=16, vocab=200, seed=0):
    """Hidden states, a vocabulary matrix and targets; rows 0-3 tie their largest logits (for ``is_top1``)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(vocab, h, generator=g)
    targets = torch.randint(0, vocab, (n,), generator=g)
    # ties for is_top1: rows 0-3 score columns 5 and 130 (other tiles) and 6 and 7 (one tile) highest, equally
    big = hidden[:4] * 50
    weight[5] = weight[130] = big[0]
    hidden[0] = hidden[1] = big[0] / 50
    weight[6] = weight[7] = big[2]
    hidden[2] = hidden[3] = big[2] / 50
    targets[:4] = torch.tensor([5, 130, 6, 7])
    return hidden, weight, targets
