"""Kept LM-head tiles: TRL's log-probabilities, metrics and gradients, with one projection fewer."""

from __future__ import annotations

import contextlib

import pytest
import torch
from lm_head_case import OUTPUTS
from lm_head_case import head as tied_head

from failforge.train import lm_head_kept
from failforge.train.lm_head_fold import narrow_cpu_tiles
from failforge.train.lm_head_kept import KeptTilesLogProb, kept_cpu_tiles

chunked = pytest.importorskip("trl.kernels.chunked_logprob")
trl_utils = pytest.importorskip("trl.trainer.utils")


def head(n=40, h=16, vocab=200, seed=0):
    """The shared case, its rows 4 and 5 aimed at the vocabulary's first and last columns."""
    hidden, weight, targets = tied_head(n, h, vocab, seed)
    targets[4], targets[5] = 0, vocab - 1
    return hidden, weight, targets


def run(hidden, weight, targets, *, temperature=1.0, scale=1.0, chunk=64, entropy_grad=False, weight_grad=False,
        outputs=OUTPUTS, bias=None, softcap=None):
    """One forward and backward through the name TRL's fused LM head calls."""
    hidden = hidden.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(weight_grad)
    out = trl_utils._ChunkedLogProbFunction.apply(hidden, weight, bias, targets, temperature, chunk, softcap, scale,
                                                  outputs)
    loss = (out[0] * torch.linspace(-1, 2, len(out[0]))).sum()
    if entropy_grad:
        loss = loss + 0.3 * out[1].sum()
    loss.backward()
    return [x.detach() if x is not None else None for x in out] + [hidden.grad, weight.grad]


def assert_same(want, got, atol=1e-4):
    """Equal to float rounding: the tie rows' logits reach ~800, where a float32 step is 6e-5, and the kept
    tiles sum ``exp(z - m) · z`` as ``exp(z - m) · (z - m) + m · exp(z - m)``, so the entropy rounds otherwise."""
    names = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "hidden grad", "weight grad")
    for name, a, b in zip(names, want, got, strict=True):
        if a is None or b is None:
            assert a is None and b is None, name
        elif a.dtype == torch.bool:
            assert torch.equal(a, b), name
        else:
            assert torch.allclose(a, b, atol=atol, rtol=1e-5), (name, (a - b).abs().max())


@pytest.mark.parametrize("temperature,scale", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.5)])
def test_the_numbers_of_trl_from_one_projection(temperature, scale, monkeypatch):
    hidden, weight, targets = head()
    want = run(hidden, weight, targets, temperature=temperature, scale=scale)
    projections = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a, **k: projections.append(a[0].shape) or mm(*a, **k))
    with kept_cpu_tiles() as kept, narrow_cpu_tiles(columns=48):  # as SFT and DPO enter them
        got = run(hidden, weight, targets, temperature=temperature, scale=scale, chunk=128)
    assert kept
    # 200 columns in tiles narrowed to 48 columns, projected once: the backward pass multiplies, it does not project
    assert len(projections) == 5
    assert_same(want, got)
    if temperature == scale == 1.0:
        assert got[4][:4].tolist() == [True, False, True, False]  # 130 and 7 follow an equal logit


def test_entropy_and_weight_gradients():
    hidden, weight, targets = head(seed=1)
    want = run(hidden, weight, targets, entropy_grad=True, weight_grad=True, temperature=0.8)
    with kept_cpu_tiles():
        got = run(hidden, weight, targets, entropy_grad=True, weight_grad=True, temperature=0.8, chunk=48)
    assert got[5] is not None and got[6] is not None
    assert_same(want, got)


def test_uncovered_calls_go_to_the_function_it_wraps(monkeypatch):
    hidden, weight, targets = head(seed=2)
    kept = []
    inner = KeptTilesLogProb.forward
    monkeypatch.setattr(KeptTilesLogProb, "forward", staticmethod(lambda ctx, *a: kept.append(1) or inner(ctx, *a)))
    cases = [
        {"softcap": 30.0},
        {"bias": torch.randn(200)},
        {"outputs": ("log_probs", "log_sum_sq_probs")},
    ]
    with kept_cpu_tiles():
        for kwargs in cases:
            run(hidden, weight, targets, **kwargs)
        with torch.no_grad():  # the reference pass: nothing to keep
            trl_utils._ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 64, None, 1.0, OUTPUTS)
        # 40 tokens x 4 whole 64-column tiles of the 200-column vocabulary
        monkeypatch.setattr(lm_head_kept, "KEEP_BYTES", 40 * 256 * 4 - 1)  # one byte short of this batch
        run(hidden, weight, targets)
        assert kept == []
        monkeypatch.setattr(lm_head_kept, "KEEP_BYTES", 40 * 256 * 4)
        run(hidden, weight, targets)
        assert kept == [1]


def test_trl_is_restored_and_a_second_backward_is_refused():
    before = trl_utils._ChunkedLogProbFunction
    hidden, weight, targets = head(seed=3)
    with kept_cpu_tiles():
        assert trl_utils._ChunkedLogProbFunction is not before
        h = hidden.clone().requires_grad_(True)
        out = trl_utils._ChunkedLogProbFunction.apply(h, weight, None, targets, 1.0, 64, None, 1.0, OUTPUTS)
        out[0].sum().backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="retain_graph"):
            out[0].sum().backward()
    assert trl_utils._ChunkedLogProbFunction is before


def test_the_buffer_passes_from_each_backward_pass_to_the_next_forward_pass(monkeypatch):
    hidden, weight, targets = head(seed=4)
    taken = []
    take = lm_head_kept.TileBuffer.take
    monkeypatch.setattr(lm_head_kept.TileBuffer, "take", lambda self, n: taken.append(take(self, n)) or taken[-1])
    want = run(hidden, weight, targets, chunk=48)
    want_small = run(hidden[:30], weight, targets[:30], chunk=48)
    with kept_cpu_tiles():
        first = run(hidden, weight, targets, chunk=48)
        second = run(hidden[:30], weight, targets[:30], chunk=48)  # a smaller batch fits the same buffer
        third = run(hidden, weight, targets, chunk=48)
    assert len(taken) == 3 and len({b.data_ptr() for b in taken}) == 1
    assert_same(want, first)
    assert_same(want, third)
    assert_same(want_small, second)


@pytest.mark.parametrize("how", ["autocast", "bf16 model"])
def test_a_bf16_step_runs_the_products_in_bf16_and_the_folds_in_float32(how, monkeypatch):
    torch.manual_seed(5)
    hidden, weight = torch.randn(40, 64), torch.randn(200, 64) * 0.3  # logits of a few units, as a trained head gives
    targets = torch.randint(0, 200, (40,))
    want = run(hidden, weight, targets, weight_grad=True)  # TRL's function in float32
    if how == "bf16 model":  # the weights and hidden states themselves in bf16, no autocast
        hidden, weight = hidden.bfloat16(), weight.bfloat16()
    step = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if how == "autocast" else contextlib.nullcontext
    with narrow_cpu_tiles(columns=48), step():
        trl_bf16 = run(hidden, weight, targets, weight_grad=True, chunk=128)  # TRL's function in the bf16 step
    kept, operands = [], []
    inner, mm = KeptTilesLogProb.forward, torch.mm
    monkeypatch.setattr(KeptTilesLogProb, "forward", staticmethod(lambda ctx, *a: kept.append(a[-1]) or inner(ctx, *a)))
    monkeypatch.setattr(torch, "mm", lambda *a, **k: operands.append((a[0].dtype, a[1].dtype)) or mm(*a, **k))
    with kept_cpu_tiles(), narrow_cpu_tiles(columns=48), step():
        got = run(hidden, weight, targets, weight_grad=True, chunk=128)
    monkeypatch.setattr(torch, "mm", mm)
    assert kept == [torch.bfloat16]  # the tiles were kept, their products asked for in bf16
    # 5 tiles of 48 columns: one projection each, then each tile's products to the hidden states and the head
    assert operands == [(torch.bfloat16, torch.bfloat16)] * 15
    assert got[5].dtype == hidden.dtype and got[6].dtype == weight.dtype  # gradients in their tensors' dtype
    names = ("log_probs", "entropy", "mean_logits", "hidden grad", "weight grad")
    for name, i in zip(names, (0, 1, 3, 5, 6), strict=True):
        assert got[i].dtype == trl_bf16[i].dtype, name
        a, b, w = got[i].float(), trl_bf16[i].float(), want[i]
        scale = w.abs().max()
        # bf16 operands and products (8 bits of mantissa): off float32 as much as TRL's function is in that step
        assert (a - w).abs().max() <= 0.02 * scale, name
        assert (a - b).abs().max() <= 0.01 * scale, name
    assert torch.allclose(got[0], trl_bf16[0].float(), atol=1e-4)  # the same bf16 logits, folded alike
