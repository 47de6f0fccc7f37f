"""TRL's fused LM head keeps its CPU tiles for the backward pass instead of projecting them again.

TRL's ``ChunkedLogProbFunction`` never holds the ``[tokens, vocabulary]`` logits: the forward
pass projects the hidden states tile by tile and folds each tile into log-softmax
statistics, and the backward pass projects every tile a second time to turn it into the
gradient. On a GPU that saves memory where memory is scarce. On a CPU it costs time: the
head is SmolLM2-135M's largest matrix (49,152 x 576), so a labelled token costs 2 x 28 M
FLOPs a product, and the head takes three (forward, the backward's projection, the
backward's product to the hidden states), about a seventh of a LoRA SFT step, the second
projection a twentieth. A CPU host has the memory to keep the tiles instead:
452 labelled tokens x 49,152 columns is 89 MB.

:func:`kept_cpu_tiles` makes the function keep them on CPUs. The forward pass projects
each tile, folds it as :mod:`failforge.train.lm_head_fold` does in place (the same
online log-sum-exp), and writes ``exp(z - m)`` (``m`` the running maximum at that tile)
into a buffer kept for the backward pass, with ``m``. The backward pass turns each kept
tile into ``p = exp(z - log Z)`` and the gradient in one pass (``p`` times
``-g · exp(m - log Z)``, plus ``g`` at the target), then takes the one product to the
hidden states. It computes what TRL's function does, to float rounding (the kept
``exp`` is taken against the tile's running maximum, not the final ``log Z``):
``tests/test_train_lm_head_kept.py`` compares log-probabilities, entropy, metrics and
gradients with TRL's.

It covers CPU heads (float32, or in a bf16 step, below) without bias, soft cap or
``log_sum_sq_probs`` (SmolLM2's and Llama's heads, the outputs SFT and DPO ask for),
while autograd records the call, and at most :data:`KEEP_BYTES` of kept tiles; everything else (GPUs, the no-grad
reference pass, a batch whose tiles would not fit) goes to TRL's function as it was,
with :func:`~failforge.train.lm_head_fold.in_place_folds`.

In a bf16 step (bf16 autocast, the model loaded in bf16, as TRL loads it for a bf16
run) the products (the projection, and each tile's products to the hidden states and
the head, summed in float32) run in bf16 as TRL's function runs them there, and the
folds and kept tiles are float32: each bf16 tile is copied into the float32 scratch
tile before it is folded, so the log-probabilities are TRL's under autocast to float
rounding. Through TRL's function the bf16 tiles go to TRL's own folds (the in-place
ones cover float32 tiles only) and every tile is projected twice: the head alone took
0.50 s for 452 tokens and 1.84 s for 1,000 under autocast, against 0.22 and 0.49 s kept
(forward and backward, 2-core EPYC with AVX512-BF16).
``tests/test_train_lm_head_kept.py`` checks both against TRL's function.

No library keeps these tiles (TRL's function is built to recompute them; Liger's fused
cross-entropy computes the gradient in the forward pass, which needs the loss's
gradient up front and has no log-probability outputs), hence this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger("failforge.train")

#: at most this many bytes of kept tiles (tokens x vocabulary x 4); a larger batch projects twice as TRL does
KEEP_BYTES = 1 << 30
#: the optional outputs this function computes (TRL's ``OPTIONAL_OUTPUTS`` less ``log_sum_sq_probs``)
COVERED_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


class TileBuffer:
    """One float32 buffer for the kept tiles, handed back by each backward pass to the next forward pass.

    A fresh buffer of tens of MB is fresh pages: the first write to each page faults, and on the
    2-core EPYC the faults made filling a 517 x 4,096 tile ten times slower (11 ms instead of 1 ms),
    a third of what keeping the tiles saves. No allocator in reach keeps CPU memory for torch
    (glibc returns blocks over 32 MB to the system at every free), hence this buffer.
    """

    def __init__(self) -> None:
        self.free: torch.Tensor | None = None

    def take(self, numel: int) -> torch.Tensor:
        """A 1-D buffer of at least ``numel`` floats (the free one if large enough; else a new one, a quarter larger)."""
        buffer, self.free = self.free, None
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(max(numel, min(numel * 5 // 4, KEEP_BYTES // 4)), dtype=torch.float32)
        return buffer

    def give(self, buffer: torch.Tensor) -> None:
        """Hand ``buffer`` back for the next forward pass (the larger one, when two are handed back)."""
        if self.free is None or self.free.numel() < buffer.numel():
            self.free = buffer


class KeptTilesLogProb(torch.autograd.Function):
    """TRL's ``ChunkedLogProbFunction`` for CPU tensors, its tiles kept (float32) for the backward pass;
    ``products``: the dtype of its matrix products (float32, or bf16 in a bf16 step)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, columns, logit_scale, outputs, buffers: TileBuffer,
                products: torch.dtype = torch.float32):
        with torch.autocast("cpu", enabled=False):  # the products' dtype is chosen here; the folds are float32
            return KeptTilesLogProb._forward(ctx, hidden, weight, targets, temperature, columns, logit_scale,
                                             outputs, buffers, products)

    @staticmethod
    def _forward(ctx, hidden, weight, targets, temperature, columns, logit_scale, outputs, buffers, products):
        ctx.set_materialize_grads(False)
        # the operands of the products: the tensors themselves, or their bf16 copies under autocast
        hidden_p, weight_p = hidden.to(products), weight.to(products)  # no copy where the dtype is already that
        n, vocab = hidden.shape[0], weight.shape[0]
        inv_t = 1.0 / temperature
        factor = logit_scale * inv_t
        tiles = [(s, min(s + columns, vocab)) for s in range(0, vocab, columns)]
        buffer = buffers.take((len(tiles) + 1) * n * columns)
        kept = buffer[: len(tiles) * n * columns].view(len(tiles), n, columns)
        scratch = buffer[len(tiles) * n * columns: (len(tiles) + 1) * n * columns].view(n, columns)
        maxima = torch.empty((len(tiles), n), dtype=torch.float32)  # the running maximum each kept tile is taken against
        running_max = torch.full((n,), float("-inf"))
        sum_exp, x_sum_exp, z_sum = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        max_before_target, target_logit = torch.full((n,), float("-inf")), torch.zeros(n)
        entropy_wanted, mean_wanted, top1_wanted = ("entropy" in outputs, "mean_logits" in outputs,
                                                    "is_top1" in outputs)
        for t, (start, end) in enumerate(tiles):
            width = end - start
            z = scratch[:, :width]
            if products == torch.float32:
                torch.mm(hidden, weight[start:end].t(), out=z)
            else:  # no CPU product of bf16 operands writes float32 (torch.mm's out_dtype is CUDA only)
                z.copy_(torch.mm(hidden_p, weight_p[start:end].t()))
            if factor != 1.0:
                z.mul_(factor)  # TRL: z * logit_scale * inv_t; one product of the two factors
            local = targets - start
            in_tile = (local >= 0) & (local < width)
            target_z = z.gather(-1, local.clamp(0, width - 1).unsqueeze(-1)).squeeze(-1)
            target_logit = torch.where(in_tile, target_z, target_logit)
            if mean_wanted:
                z_sum += z.sum(-1)
            tile_max, first = z.max(-1)
            if top1_wanted:  # as lm_head_fold: the largest logit of the tiles whose first maximum lies before the target
                max_before_target = torch.where(first < local, torch.maximum(max_before_target, tile_max),
                                                max_before_target)
            new_m = torch.maximum(running_max, tile_max)
            rescale = torch.exp(running_max - new_m)
            d = z.sub_(new_m.unsqueeze(-1))
            e = torch.exp(d, out=kept[t, :, :width])
            e_sum = e.sum(-1)
            sum_exp.mul_(rescale).add_(e_sum)
            if entropy_wanted:  # sum(e * z) = sum(e * (z - m)) + m * sum(e)
                x_sum_exp.mul_(rescale).add_(d.mul_(e).sum(-1)).add_(new_m * e_sum)
            maxima[t] = new_m
            running_max = new_m
        log_z = running_max + torch.log(sum_exp)
        logprobs = target_logit - log_z
        entropy = log_z - x_sum_exp / sum_exp if entropy_wanted else None
        mean_logits = z_sum / vocab if mean_wanted else None
        is_top1 = (target_logit >= running_max) & (target_logit > max_before_target) if top1_wanted else None
        ctx.save_for_backward(hidden, weight, targets)
        ctx.operands = None if products == torch.float32 else (hidden_p, weight_p)
        ctx.kept, ctx.maxima, ctx.tiles, ctx.factor = kept, maxima, tiles, factor
        ctx.buffer, ctx.buffers = buffer, buffers
        ctx.log_z = log_z
        ctx.entropy = entropy.detach() if entropy is not None else None  # an output: detached, so no cycle through ctx
        ctx.mark_non_differentiable(*(x for x in (mean_logits, is_top1) if x is not None))
        return logprobs, entropy, None, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy, *_):
        with torch.autocast("cpu", enabled=False):
            return KeptTilesLogProb._backward(ctx, grad_logprobs, grad_entropy)

    @staticmethod
    def _backward(ctx, grad_logprobs, grad_entropy):
        if ctx.kept is None:
            raise RuntimeError("the kept LM-head tiles were used by an earlier backward pass (retain_graph is not supported)")
        hidden, weight, targets = ctx.saved_tensors
        kept, maxima, tiles, factor, log_z = ctx.kept, ctx.maxima, ctx.tiles, ctx.factor, ctx.log_z
        ctx.kept = ctx.maxima = None  # the tiles become gradients in place: one backward pass only
        buffer, ctx.buffer = ctx.buffer, None
        operands, ctx.operands = ctx.operands, None
        hidden_p, weight_p = operands if operands is not None else (hidden, weight)
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        # summed in float32 whatever the inputs' dtype, as TRL's function sums them
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32) if need_weight else None
        g = grad_logprobs.float() if grad_logprobs is not None else torch.zeros_like(log_z)
        for t, (start, end) in enumerate(tiles):
            width = end - start
            to_p = torch.exp(maxima[t] - log_z)  # p = kept · exp(m - log Z)
            p = kept[t, :, :width]
            if grad_entropy is None:
                # TRL: g · (1[j = target] - p_j), times inv_t · logit_scale: one pass, then the targets
                grad = p.mul_((-g * to_p * factor).unsqueeze(-1))
            else:
                # TRL: minus g_H · p_j · (log p_j + H); p · log p as xlogy so that p = 0 gives 0
                p.mul_(to_p.unsqueeze(-1))
                grad = p * (-g).unsqueeze(-1)
                grad -= grad_entropy.unsqueeze(-1) * (torch.xlogy(p, p) + p * ctx.entropy.unsqueeze(-1))
                grad.mul_(factor)
            local = targets - start
            rows = ((local >= 0) & (local < width)).nonzero().squeeze(-1)
            grad[rows, local[rows]] += g[rows] * factor
            if operands is None:
                if grad_hidden is not None:
                    grad_hidden.addmm_(grad, weight[start:end])
                if grad_weight is not None:
                    grad_weight[start:end].addmm_(grad.t(), hidden)
            else:  # bf16 products, summed in float32
                grad_p = grad.to(weight_p.dtype)
                if grad_hidden is not None:
                    grad_hidden += torch.mm(grad_p, weight_p[start:end])
                if grad_weight is not None:
                    grad_weight[start:end] += torch.mm(grad_p.t(), hidden_p)
        ctx.buffers.give(buffer)
        if grad_hidden is not None:
            grad_hidden = grad_hidden.to(hidden.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def _products(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype the head's products run in: float32 for float32 tensors, bf16 for bf16 ones (a model loaded
    in bf16) or under CPU bf16 autocast; None for anything else (TRL's function takes it)."""
    dtypes = {hidden.dtype, weight.dtype}
    if torch.is_autocast_enabled("cpu"):
        bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and dtypes <= {torch.float32, torch.bfloat16}
        return torch.bfloat16 if bf16 else None
    return {frozenset({torch.float32}): torch.float32, frozenset({torch.bfloat16}): torch.bfloat16}.get(
        frozenset(dtypes))


def _keeps(hidden, weight, bias, softcap, outputs, columns: int) -> bool:
    """Whether :class:`KeptTilesLogProb` covers this call (module docstring)."""
    vocab = weight.shape[0]
    return (
        hidden.device.type == "cpu"
        and _products(hidden, weight) is not None
        and bias is None
        and softcap is None
        and all(o in COVERED_OUTPUTS for o in outputs)
        and torch.is_grad_enabled()
        and (hidden.requires_grad or weight.requires_grad)
        and hidden.shape[0] * -(-vocab // columns) * columns * 4 <= KEEP_BYTES  # whole tiles, the last one too
    )


@contextmanager
def kept_cpu_tiles() -> Iterator[bool]:
    """Within the block, TRL's fused LM head keeps its CPU tiles for the backward pass (module docstring);
    yields whether it could. The tiles are as wide as the caller asks: enter it before
    :func:`~failforge.train.lm_head_fold.narrow_cpu_tiles`, which then narrows them."""
    import trl.trainer.utils as trl_utils

    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not callable(getattr(function, "apply", None)):
        log.warning("this TRL has no chunked log-prob function; its LM head projects its tiles twice")
        yield False
        return

    buffers = TileBuffer()

    class Kept:
        """TRL's function (whatever wraps it now), or :class:`KeptTilesLogProb` where that covers the call.
        TRL's arguments: hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, outputs."""

        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
                  outputs=None):
            if outputs is None or not _keeps(hidden, weight, bias, softcap, outputs, chunk_size):
                rest = () if outputs is None else (outputs,)  # no outputs given: TRL's own default
                return function.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale,
                                      *rest)
            return KeptTilesLogProb.apply(hidden, weight, targets, temperature, chunk_size, logit_scale,
                                          tuple(outputs), buffers, _products(hidden, weight))

    trl_utils._ChunkedLogProbFunction = Kept
    try:
        yield True
    finally:
        trl_utils._ChunkedLogProbFunction = function
