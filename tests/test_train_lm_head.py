"""TRL's fused LM head scoring labelled positions only on a CPU (failforge.train.lm_head).

A small randomly initialised llama model (the architecture of SmolLM2) goes through
TRL's own ``add_fused_lm_head`` both ways; the log-probabilities, the loss and the
gradients must agree, and inside the block only the labelled positions reach the
projection.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from failforge.train.lm_head import labelled_positions_only  # noqa: E402
from tiny_llama import tiny_llama  # noqa: E402


def tiny_model():
    model = tiny_llama()
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 301, (3, 17), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100  # the prompt
    labels[1, 12:] = -100  # padding
    labels[2, 15:] = -100
    return ids, labels


def forward(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_same_log_probs_loss_and_gradients_with_labelled_positions_only():
    model = tiny_model()
    ids, labels = batch()
    every, every_grads = forward(model, ids, labels)
    with labelled_positions_only() as compact:
        assert compact is True
        only, only_grads = forward(model, ids, labels)
    assert torch.allclose(every.log_probs, only.log_probs, atol=1e-5)
    assert torch.equal(every.label_mask, only.label_mask)
    assert abs(every.loss.item() - only.loss.item()) < 1e-5
    assert every_grads.keys() == only_grads.keys() and every_grads
    for name, grad in every_grads.items():
        assert torch.allclose(grad, only_grads[name], atol=1e-5), name
    # unlabelled positions are zero either way; labelled ones are real log-probabilities
    mask = only.label_mask
    assert torch.all(only.log_probs[~mask] == 0)
    assert torch.all(only.log_probs[mask] < 0)


def test_only_labelled_positions_reach_the_projection(monkeypatch):
    model = tiny_model()
    ids, labels = batch()
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    model(input_ids=ids, labels=labels, fused_lm_head=True)
    with labelled_positions_only():
        model(input_ids=ids, labels=labels, fused_lm_head=True)
    labelled = int((labels[:, 1:] != -100).sum())
    assert rows == [3 * 16, labelled]
    assert labelled < 3 * 16


def test_the_switch_is_restored_after_the_block_and_after_an_error():
    original = trl_utils._use_triton
    cpu = torch.device("cpu")
    assert original(cpu) is False
    with pytest.raises(RuntimeError):
        with labelled_positions_only():
            assert trl_utils._use_triton(cpu) is True
            raise RuntimeError("a failed step")
    assert trl_utils._use_triton is original


def test_a_trl_without_the_switch_is_left_alone(monkeypatch, caplog):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with caplog.at_level("WARNING", logger="failforge.train"):
        with labelled_positions_only() as compact:
            assert compact is False
    assert "every position is scored" in caplog.text
    assert not hasattr(trl_utils, "_use_triton")
