"""FusedRMSNorm: transformers' LlamaRMSNorm as one autograd node, the same values."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from failforge.train.rms_norm import FusedRMSNorm, use_fused_rms_norm
from tiny_llama import tiny_llama


def norm_pair(width: int, dtype: torch.dtype, train_weight: bool):
    torch.manual_seed(0)
    norm = LlamaRMSNorm(width, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)  # not ones, so the weight's place in the formula counts
    norm.weight.requires_grad_(train_weight)
    fused = copy.deepcopy(norm)
    fused.__class__ = FusedRMSNorm
    return norm, fused


def run(norm, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    out = norm(x)
    out.backward(grad)
    return out.detach(), x.grad, norm.weight.grad


# bf16 results may differ in their last bit (one bf16 ulp of values up to ~5: 0.03)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.bfloat16, 0.04)])
@pytest.mark.parametrize("train_weight", [False, True])
def test_outputs_and_gradients_match_transformers(dtype, atol, train_weight):
    norm, fused = norm_pair(96, dtype, train_weight)
    x = (torch.randn(2, 13, 96) * 3).to(dtype)
    grad = torch.randn(2, 13, 96).to(dtype)
    want, got = run(norm, x, grad), run(fused, x, grad)
    for a, b, what in zip(want, got, ("output", "input gradient", "weight gradient"), strict=True):
        if not train_weight and what == "weight gradient":
            assert a is None and b is None
            continue
        assert b.dtype == a.dtype, what
        # the weight's gradient sums 26 tokens: bf16 rounding of the sum grows with it
        tol = atol * (8 if what == "weight gradient" and dtype == torch.bfloat16 else 1)
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=1e-2), (what, (a.float() - b.float()).abs().max())


def test_float32_input_is_not_written_in_place():
    _, fused = norm_pair(32, torch.float32, False)
    x = torch.randn(4, 32, requires_grad=True)
    kept = x.detach().clone()
    fused(x).sum().backward()
    assert torch.equal(x.detach(), kept)


def test_under_bf16_autocast_the_statistics_stay_float32():
    """A float32 residual stream under autocast (weights float32, products bf16): the norm's
    output is float32, and equals transformers' under the same autocast."""
    norm, fused = norm_pair(64, torch.float32, False)
    x = torch.randn(3, 7, 64) * 2
    grad = torch.randn(3, 7, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = run(norm, x, grad), run(fused, x, grad)
    assert got[0].dtype == torch.float32
    assert torch.allclose(want[0], got[0], atol=1e-5) and torch.allclose(want[1], got[1], atol=1e-5)


def test_use_fused_rms_norm_swaps_every_llama_norm_and_the_model_computes_the_same():
    model = tiny_llama()
    fused = copy.deepcopy(model)
    assert use_fused_rms_norm(fused) == 2 * 2 + 1  # two per decoder layer, and the final norm
    assert use_fused_rms_norm(fused) == 0  # already swapped
    assert fused.state_dict().keys() == model.state_dict().keys()
    ids = torch.randint(0, 301, (2, 9))
    a, b = model(ids, labels=ids), fused(ids, labels=ids)
    assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name, p in fused.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-5, rtol=1e-4), name
