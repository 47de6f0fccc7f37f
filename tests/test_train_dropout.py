"""GapDropout: nn.Dropout's distribution, drawn as gaps between dropped positions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from failforge.train.dropout import GAP_MAX_P, GapDropout, dropped_positions, use_gap_dropout


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_dropped_positions_are_bernoulli(p):
    torch.manual_seed(11)
    n = 2_000_000
    d = dropped_positions(n, p)
    assert d.dtype == torch.int64
    assert int(d.min()) >= 0 and int(d.max()) < n
    assert bool((d[1:] > d[:-1]).all())  # sorted, each position once
    sd = math.sqrt(n * p * (1 - p))
    assert abs(d.numel() - n * p) < 5 * sd
    # independent trials: the gaps are Geometric(p), so P(gap = k) = (1 - p)^(k - 1) p
    gaps = torch.diff(d)
    m = gaps.numel()
    for k in (1, 2, 5):
        want = (1 - p) ** (k - 1) * p
        got = int((gaps == k).sum())
        assert abs(got - m * want) < 5 * math.sqrt(m * want * (1 - want)), k
    # the same for the first and the second half of the range: no drift along the tensor
    first = int((d < n // 2).sum())
    assert abs(first - (d.numel() - first)) < 5 * math.sqrt(d.numel())


def test_dropped_positions_repeat_with_the_seed_and_cover_small_tensors():
    torch.manual_seed(3)
    a = dropped_positions(10_000, 0.05)
    torch.manual_seed(3)
    b = dropped_positions(10_000, 0.05)
    assert torch.equal(a, b)
    assert dropped_positions(0, 0.05).numel() == 0
    assert dropped_positions(100, 0.0).numel() == 0
    # a tiny tensor with a high rate needs several rounds of gaps; all positions stay in range
    torch.manual_seed(4)
    counts = [dropped_positions(3, 0.25).numel() for _ in range(4000)]
    assert all(0 <= c <= 3 for c in counts)
    assert abs(sum(counts) / 4000 - 0.75) < 0.05


def test_forward_and_backward_match_the_mask():
    torch.manual_seed(5)
    x = torch.randn(64, 48, requires_grad=True)
    drop = GapDropout(0.1).train()
    y = drop(x)
    zero = y == 0
    assert 0 < int(zero.sum()) < x.numel()
    kept = ~zero
    assert torch.allclose(y[kept], x[kept] / 0.9)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    want = torch.where(kept, w / 0.9, torch.zeros_like(w))
    assert torch.allclose(x.grad, want)
    # a non-contiguous input is dropped element by element too
    xt = torch.randn(48, 64).t()
    yt = drop(xt)
    assert yt.shape == xt.shape and torch.allclose(yt[yt != 0], xt[yt != 0] / 0.9)


def test_eval_zero_rate_and_high_rate_behave_as_nn_dropout():
    x = torch.randn(8, 8)
    drop = GapDropout(0.1).eval()
    assert drop(x) is x
    assert GapDropout(0.0).train()(x) is x
    high = GapDropout(GAP_MAX_P + 0.25).train()
    torch.manual_seed(1)
    a = high(x)
    torch.manual_seed(1)
    assert torch.equal(a, nn.functional.dropout(x, GAP_MAX_P + 0.25, True))


def test_use_gap_dropout_swaps_peft_lora_dropout():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import disable_dropout_in_model

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
    model.train()
    assert use_gap_dropout(model) == 14  # 7 adapted linear layers in each of 2 decoder layers
    drops = [m for m in model.modules() if isinstance(m, GapDropout)]
    assert len(drops) == 14 and all(d.training and d.p == 0.05 for d in drops)
    assert use_gap_dropout(model) == 0  # already swapped
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    disable_dropout_in_model(model)  # what TRL's DPO trainer does; it sees the swapped modules as dropout
    assert all(d.p == 0 for d in drops)
