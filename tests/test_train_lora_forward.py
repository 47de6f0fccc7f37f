"""FusedLoraLinear: PEFT's LoRA layer, its adapter added into the base output in one pass."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from failforge.train.dropout import use_gap_dropout
from failforge.train.lora_forward import FusedLoraLinear, use_fused_lora
from tiny_llama import tiny_llama


def lora_pair(dropout: float = 0.0, alpha: int = 12, **extra):
    """A PEFT LoRA model with non-zero B (so the adapter changes outputs) and a fused copy of it."""
    model = get_peft_model(
        tiny_llama(), LoraConfig(r=4, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", **extra)
    )
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    fused = copy.deepcopy(model)
    return model, fused, use_fused_lora(fused)


def counting_plain_calls(monkeypatch) -> list[int]:
    """How many forwards take the fused path (the rest run PEFT's forward)."""
    calls = [0]
    inner = FusedLoraLinear._plain_adapter

    def spy(self, *a):
        adapter = inner(self, *a)
        calls[0] += adapter is not None
        return adapter

    monkeypatch.setattr(FusedLoraLinear, "_plain_adapter", spy)
    return calls


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_outputs_and_gradients_match_peft(monkeypatch):
    peft_model, fused, swapped = lora_pair()  # scaling 3: not a power of two, so rounding differs
    assert swapped == 2 * 7  # every adapted linear of both decoder layers
    calls = counting_plain_calls(monkeypatch)
    ids = torch.randint(0, 301, (3, 9))
    a = peft_model(ids, labels=ids)
    b = fused(ids, labels=ids)
    assert calls[0] == 14  # the fused path ran, once per layer
    assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), peft_model.disable_adapter():
        assert not torch.allclose(a.logits, peft_model(ids).logits, atol=1e-2)  # the adapters count
    a.loss.backward()
    b.loss.backward()
    ga, gb = grads(peft_model), grads(fused)
    assert set(ga) == set(gb) and len(ga) == 28  # lora_A and lora_B of 14 layers
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-5, rtol=1e-4), name


def test_dropout_draws_the_same_masks_as_peft_with_the_same_seed(monkeypatch):
    peft_model, fused, _ = lora_pair(dropout=0.1)
    use_gap_dropout(peft_model)
    use_gap_dropout(fused)
    peft_model.train()
    fused.train()
    ids = torch.randint(0, 301, (2, 11))
    torch.manual_seed(7)
    a = peft_model(ids).logits
    torch.manual_seed(7)
    b = fused(ids).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    torch.manual_seed(8)
    assert not torch.allclose(a, fused(ids).logits, atol=1e-3)  # another seed, other masks


def test_adapter_off_merged_and_autocast(monkeypatch):
    peft_model, fused, _ = lora_pair()
    ids = torch.randint(0, 301, (2, 5))
    calls = counting_plain_calls(monkeypatch)
    with fused.disable_adapter(), peft_model.disable_adapter():  # DPO's reference: the base model
        assert torch.equal(fused(ids).logits, peft_model(ids).logits)
    assert calls[0] == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(ids).logits
        want = peft_model(ids).logits
    assert calls[0] == 14 and out.dtype == want.dtype == torch.bfloat16
    assert torch.allclose(out.float(), want.float(), atol=0.1)
    fused.merge_adapter()  # merged weights: the base layer alone, as PEFT does
    calls[0] = 0
    with torch.no_grad():
        assert torch.allclose(fused(ids).logits, peft_model(ids).logits, atol=1e-4)
    assert calls[0] == 0
    merged = fused.merge_and_unload()
    assert not any(isinstance(m, PeftLoraLinear) for m in merged.modules())


@pytest.mark.parametrize("extra", [{"use_dora": True}, {"lora_bias": True}])
def test_variants_run_pefts_forward(monkeypatch, extra):
    peft_model, fused, _ = lora_pair(**extra)
    calls = counting_plain_calls(monkeypatch)
    ids = torch.randint(0, 301, (2, 6))
    assert torch.equal(fused(ids).logits, peft_model(ids).logits)
    assert calls[0] == 0
