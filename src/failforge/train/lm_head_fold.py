"""TRL's fused LM head folds its vocabulary tiles in place on CPUs: the same numbers, fewer passes.

TRL projects the hidden states through the vocabulary in tiles (``trl.kernels.chunked_logprob``)
and folds each tile into log-softmax statistics. On CUDA and XPU a Triton kernel does the
fold in one pass. Elsewhere ``_forward_tile`` and ``_backward_tile`` do it in torch, one
operation at a time, and every operation writes a new tile: a tile is 32,768 vocabulary
columns by every labelled token, over 100 MB on a 135M model, and the backward fold makes
about a dozen passes over it (a zero tile, an index tile, a target mask, ``1 - p``...). On
two CPU cores the folds took about a fifth of a DPO step, more than the vocabulary
projection itself (docs/training.md).

:func:`in_place_folds` swaps both for versions that compute the same values in place:

- forward: the target logit is read first, then ``exp(z - max)`` is taken in the tile's
  own buffer (TRL reuses that buffer for the next tile anyway). ``is_top1``'s running
  "largest logit before the target" becomes "the largest logit of the tiles whose first
  maximum lies before the target": the flag it gives is the same (the target is the first
  maximum of its row), from one ``max`` pass instead of an index tile, a masked copy and
  a second ``amax``.
- backward: ``p = exp(z - log Z)`` in place, times ``-g``, then ``g * (1 - p)`` written at
  the target positions only, instead of building a one-hot tile.

Each elementwise operation is the one TRL runs, on the same values, so log-probabilities,
the loss and the gradient are bit-for-bit TRL's; ``tests/test_train_lm_head_fold.py`` checks
that against TRL's own folds. Cases these versions do not cover (a soft-capped head,
``log_sum_sq_probs``, an entropy gradient, tiles in another dtype than float32) go to TRL's
folds unchanged. Like ``labelled_positions_only`` this patches private names of TRL: it
checks they are there and otherwise leaves TRL as it is, with a warning in the log.

:func:`narrow_cpu_tiles` makes the tiles :data:`CPU_TILE_COLUMNS` vocabulary columns wide
on CPUs instead of TRL's 32,768. A 32,768-column tile of a few hundred tokens is far larger
than a CPU's last-level cache, so the projection writes it to memory and each fold pass
reads it back from there; a 4,096-column tile of 632 tokens (10 MB) stays in a 32 MB L3.
Measured on the 2-core EPYC (forward and backward of TRL's ``ChunkedLogProbFunction`` with
the in-place folds, 49,152 x 576 head): 632 tokens 1.36 s at 32,768 columns, 1.06 s at
4,096; 2,000 tokens 3.6 s and 3.0-3.1 s; 150 tokens 0.29 s and 0.27 s. The tile width is
the fold's own parameter (TRL passes it to the function), so the statistics are the same
online log-sum-exp over more tiles: values agree with the wide tiles to float rounding
(tested). GPUs keep TRL's width.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger("failforge.train")

#: vocabulary columns of a projection tile on CPUs (TRL's default, 32,768, is tuned for GPUs)
CPU_TILE_COLUMNS = 4096


def _scale_in_place(z: torch.Tensor, *factors: float) -> None:
    """``z`` times each factor in turn, as TRL multiplies them (forward: logit scale, then 1 / temperature;
    backward: the other way round); a factor of 1 changes nothing, so it is skipped."""
    for factor in factors:
        if factor != 1.0:
            z.mul_(factor)


def _fold_forward(original):
    def fold(tile, tile_stride, targets, running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum, max_before_target,
             target_logit, vocab_start, n_cols, logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_ENTROPY,
             HAS_LOG_SUM_SQ_PROBS, HAS_MEAN_LOGITS, HAS_IS_TOP1, BLOCK_SIZE):
        if HAS_SOFTCAP or HAS_LOG_SUM_SQ_PROBS or tile.dtype != torch.float32:
            return original(tile, tile_stride, targets, running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum,
                            max_before_target, target_logit, vocab_start, n_cols, logit_scale, softcap, inv_t,
                            HAS_SOFTCAP, HAS_ENTROPY, HAS_LOG_SUM_SQ_PROBS, HAS_MEAN_LOGITS, HAS_IS_TOP1, BLOCK_SIZE)
        z = tile  # the projection buffer: TRL overwrites it with the next tile
        _scale_in_place(z, logit_scale, inv_t)
        local = targets - vocab_start
        in_tile = (local >= 0) & (local < n_cols)
        target_z = z.gather(-1, local.clamp(0, n_cols - 1).unsqueeze(-1)).squeeze(-1)
        target_logit.copy_(torch.where(in_tile, target_z, target_logit))
        if HAS_MEAN_LOGITS:
            z_sum += z.sum(-1)
        tile_max, first = z.max(-1)  # ``first``: the first column holding the maximum
        if HAS_IS_TOP1:
            before = first < local
            max_before_target.copy_(torch.where(before, torch.maximum(max_before_target, tile_max), max_before_target))
        new_m = torch.maximum(running_max, tile_max)
        rescale = torch.exp(running_max - new_m)
        # exp(z - max): in the tile's buffer, unless the entropy still needs z
        e = (torch.sub(z, new_m.unsqueeze(-1)) if HAS_ENTROPY else z.sub_(new_m.unsqueeze(-1))).exp_()
        sum_exp.mul_(rescale).add_(e.sum(-1))
        if HAS_ENTROPY:
            x_sum_exp.mul_(rescale).add_(e.mul_(z).sum(-1))
        running_max.copy_(new_m)

    return fold


def _fold_backward(original):
    def fold(tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy, vocab_start, n_cols,
             logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD, HAS_ENTROPY_GRAD, BLOCK_SIZE):
        if HAS_SOFTCAP or HAS_ENTROPY_GRAD or tile.dtype != torch.float32:
            return original(tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy, vocab_start,
                            n_cols, logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD, HAS_ENTROPY_GRAD,
                            BLOCK_SIZE)
        if not HAS_LOGPROB_GRAD:
            tile.zero_()
            return
        _scale_in_place(tile, logit_scale, inv_t)
        local = targets - vocab_start
        rows = ((local >= 0) & (local < n_cols)).nonzero().squeeze(-1)
        cols = local[rows]
        g = grad_logprobs
        p = tile.sub_(log_z.unsqueeze(-1)).exp_()  # TRL: log_p = z - log_z; p = exp(log_p)
        p_target = p[rows, cols]
        # TRL: g * (1[j = target] - p_j), then * inv_t * logit_scale
        p.mul_(g.neg().unsqueeze(-1))
        p[rows, cols] = g[rows] * (1.0 - p_target)
        _scale_in_place(p, inv_t, logit_scale)

    return fold


@contextmanager
def in_place_folds() -> Iterator[bool]:
    """Within the block, TRL's torch folds of the LM head's tiles run in place (module docstring); yields whether they could."""
    try:
        import trl.kernels.chunked_logprob as kernels
    except ImportError:
        kernels = None
    forward = getattr(kernels, "_forward_tile", None)
    backward = getattr(kernels, "_backward_tile", None)
    if not (callable(forward) and callable(backward)):
        log.warning("this TRL has no torch folds for its fused LM head; they run as TRL has them")
        yield False
        return
    kernels._forward_tile, kernels._backward_tile = _fold_forward(forward), _fold_backward(backward)
    try:
        yield True
    finally:
        kernels._forward_tile, kernels._backward_tile = forward, backward


@contextmanager
def narrow_cpu_tiles(columns: int = CPU_TILE_COLUMNS) -> Iterator[bool]:
    """Within the block, TRL's fused LM head projects CPU tensors in tiles of ``columns`` vocabulary columns
    (module docstring); yields whether it could."""
    import trl.trainer.utils as trl_utils

    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not callable(getattr(function, "apply", None)):
        log.warning("this TRL has no chunked log-prob function; its LM head keeps its own tile width")
        yield False
        return

    class Narrow:
        """TRL's function, its tile width capped for CPU tensors (TRL's arguments: hidden, weight, bias,
        targets, temperature, chunk_size, ...)."""

        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, *rest):
            if hidden.device.type == "cpu":
                chunk_size = min(chunk_size, columns)
            return function.apply(hidden, weight, bias, targets, temperature, chunk_size, *rest)

    trl_utils._ChunkedLogProbFunction = Narrow
    try:
        yield True
    finally:
        trl_utils._ChunkedLogProbFunction = function
