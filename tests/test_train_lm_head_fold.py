"""In-place folds of TRL's fused LM head: the same numbers as TRL's own torch folds, bit for bit."""

from __future__ import annotations

import pytest
import torch
from lm_head_case import OUTPUTS, head

from failforge.train.lm_head_fold import in_place_folds, narrow_cpu_tiles

chunked = pytest.importorskip("trl.kernels.chunked_logprob")
trl_utils = pytest.importorskip("trl.trainer.utils")


def run(hidden, weight, targets, *, temperature=1.0, scale=1.0, softcap=None, chunk=64, entropy_grad=False):
    hidden = hidden.clone().requires_grad_(True)
    out = chunked.ChunkedLogProbFunction.apply(hidden, weight, None, targets, temperature, chunk, softcap, scale, OUTPUTS)
    log_probs, entropy, _, mean_logits, is_top1 = out
    loss = (log_probs * torch.linspace(-1, 2, len(log_probs))).sum()
    if entropy_grad:
        loss = loss + entropy.sum()
    loss.backward()
    return log_probs.detach(), entropy.detach(), mean_logits, is_top1, hidden.grad


@pytest.mark.parametrize("temperature,scale", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.5)])
def test_the_same_numbers_as_trl(temperature, scale):
    hidden, weight, targets = head()
    want = run(hidden, weight, targets, temperature=temperature, scale=scale)
    with in_place_folds() as swapped:
        got = run(hidden, weight, targets, temperature=temperature, scale=scale)
    assert swapped
    for name, a, b in zip(("log_probs", "entropy", "mean_logits", "is_top1", "grad"), want, got, strict=True):
        assert torch.equal(a, b), name
    if temperature == scale == 1.0:
        # the ties: 130 and 7 come after an equal logit, so they are not the first maximum
        assert want[3][:4].tolist() == [True, False, True, False]


def test_uncovered_cases_run_trl_folds():
    hidden, weight, targets = head(seed=1)
    for kwargs in ({"softcap": 30.0}, {"entropy_grad": True}):
        want = run(hidden, weight, targets, **kwargs)
        with in_place_folds():
            got = run(hidden, weight, targets, **kwargs)
        for a, b in zip(want, got, strict=True):
            assert torch.equal(a, b), kwargs


def test_trl_is_restored():
    before = chunked._forward_tile, chunked._backward_tile
    with in_place_folds():
        assert chunked._forward_tile is not before[0]
    assert (chunked._forward_tile, chunked._backward_tile) == before


def test_narrow_cpu_tiles_caps_the_width_trl_passes_and_keeps_the_numbers(monkeypatch):
    hidden, weight, targets = head(seed=2)
    widths = []
    inner = chunked.ChunkedLogProbFunction.forward

    def spy(ctx, hidden, weight, bias, targets, temperature, chunk_size, *rest):
        widths.append(chunk_size)
        return inner(ctx, hidden, weight, bias, targets, temperature, chunk_size, *rest)

    monkeypatch.setattr(chunked.ChunkedLogProbFunction, "forward", staticmethod(spy))

    def through_trl(chunk):  # the name TRL's fused LM head calls, with TRL's wide tiles
        h = hidden.clone().requires_grad_(True)
        out = trl_utils._ChunkedLogProbFunction.apply(h, weight, None, targets, 1.0, chunk, None, 1.0, OUTPUTS)
        (out[0] * torch.linspace(-1, 2, len(out[0]))).sum().backward()
        return out[0].detach(), out[1].detach(), out[3], h.grad

    before = trl_utils._ChunkedLogProbFunction
    want = through_trl(128)  # 2 tiles of the 200-column vocabulary
    with in_place_folds(), narrow_cpu_tiles(columns=48) as narrowed:
        got = through_trl(128)  # 5 tiles
        assert through_trl(32)[0].shape == want[0].shape
    assert narrowed and widths == [128, 48, 32]  # capped, never widened
    assert trl_utils._ChunkedLogProbFunction is before
    for name, a, b in zip(("log_probs", "entropy", "mean_logits", "grad"), want, got, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name
    assert not torch.equal(want[3], got[3])  # more tiles: another rounding, so the tiles really changed
