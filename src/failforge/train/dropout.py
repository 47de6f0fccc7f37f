"""LoRA dropout that costs a CPU step little: the same distribution, drawn gap by gap.

PEFT drops each LoRA input with ``torch.nn.Dropout``: one Bernoulli draw per element.
On a CPU that draw is slow (torch's generator produces one number at a time), and in a
LoRA SFT step of the bundled 135M model it took about a sixth of the step: every
adapted linear layer (7 a decoder layer) draws a mask as large as its input, and the
draws cost as much as the layer's own matrix product (``bench/train_step.py``; the
figures are in docs/training.md).

With a small drop rate p (0.05 by default) most of those draws keep their element.
:class:`GapDropout` draws only the dropped positions: in a sequence of independent
Bernoulli(p) trials the gaps between successes are independent Geometric(p) variables,
so ``ceil(log(U) / log(1 - p))`` for uniform U gives the gaps, their running sum the
dropped positions, and about p x n uniforms are drawn instead of n. The kept elements
are scaled by 1 / (1 - p) as ``nn.Dropout`` does, so the output has the same
distribution as ``nn.Dropout``'s, up to float64 rounding of the gaps; only the random
stream differs. The uniforms come from torch's generator, so ``torch.manual_seed`` (and
the trainer's ``seed``) still makes a run repeatable. No library draws a Bernoulli mask
this way, hence this module; it is a subclass of ``nn.Dropout`` so that ``.eval()`` and
TRL's ``disable_dropout`` treat it as one.

Above :data:`GAP_MAX_P`, or on another device than a CPU, it is ``nn.Dropout`` itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: above this drop rate the gaps are no cheaper to draw than the mask
GAP_MAX_P = 0.25


def dropped_positions(n: int, p: float) -> torch.Tensor:
    """Sorted positions in ``range(n)`` that independent Bernoulli(p) trials drop (int64)."""
    if n <= 0 or p <= 0.0:
        return torch.empty(0, dtype=torch.int64)
    log_keep = math.log1p(-p)
    mean = n * p
    out: list[torch.Tensor] = []
    last = 0.0  # 1-based position of the last drop drawn so far
    while True:
        # enough gaps to pass n nearly always at the first draw (six standard deviations)
        want = int(mean + 6.0 * math.sqrt(mean) + 16)
        # 1 - U lies in (0, 1], so its log is finite; a gap of 0 (1 - U == 1) is raised to 1
        u = 1.0 - torch.rand(want, dtype=torch.float64)
        ends = u.log_().div_(log_keep).ceil_().clamp_(min=1.0).cumsum_(0).add_(last)
        inside = int(torch.searchsorted(ends, float(n), right=True))
        out.append(ends[:inside])
        if inside < want:
            break
        last = float(ends[-1])
    return torch.cat(out).to(torch.int64).sub_(1)


def _apply_mask(t: torch.Tensor, dropped: torch.Tensor, p: float) -> torch.Tensor:
    """``t`` scaled by 1 / (1 - p), zero at the ``dropped`` positions of its contiguous layout."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)  # contiguous, whatever t's strides
    torch.mul(t, 1.0 / (1.0 - p), out=out)
    out.view(-1).index_fill_(0, dropped, 0.0)
    return out


class _GapDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        dropped = dropped_positions(x.numel(), p)
        ctx.save_for_backward(dropped)
        ctx.p = p
        return _apply_mask(x, dropped, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (dropped,) = ctx.saved_tensors
        return _apply_mask(grad, dropped, ctx.p), None  # the same mask and scale: the mask is linear


class GapDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask is drawn as gaps between dropped positions (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p > GAP_MAX_P or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        return _GapDropoutFunction.apply(x, self.p)


def use_gap_dropout(model) -> int:
    """Swap every LoRA adapter's ``nn.Dropout`` in ``model`` for a :class:`GapDropout` of the same rate; returns how many."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)  # PEFT's LoraLayer: a ModuleDict by adapter name
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is nn.Dropout:
                replacement = GapDropout(drop.p)
                replacement.train(drop.training)
                drops[name] = replacement
                swapped += 1
    return swapped
