"""Row-by-row attention over packed sequences and packed DPO batches (failforge.train.packing).

The fast tests use a small randomly initialised llama model (SmolLM2's architecture)
through transformers and TRL's fused LM head; the slow one trains real DPO steps on the
bundled SmolLM2-135M with and without packing.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from failforge.train import packing  # noqa: E402
from failforge.train.lm_head import labelled_positions_only  # noqa: E402
from tiny_llama import tiny_llama as tiny  # noqa: E402

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 301, (4, 12), generator=g)
    attention = torch.ones(4, 12, dtype=torch.long)
    attention[1, 9:] = 0
    attention[2, 5:] = 0
    attention[3, 11:] = 0
    completion = torch.zeros(4, 12, dtype=torch.long)
    completion[:, 4:] = 1
    labels = ids.masked_fill((completion * attention) == 0, -100)
    return ids, attention, labels


@pytest.fixture
def sdpa_calls(monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    seen: list[int] = []
    inner = sdpa.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        seen.append(query.shape[2])
        return inner(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", spy)
    return seen


def test_a_packed_sequence_gives_each_row_the_logits_it_has_alone(sdpa_calls):
    model = tiny()
    assert packing.use_segment_attention(model)
    rows = [torch.randint(1, 301, (1, n), generator=torch.Generator().manual_seed(n)) for n in (7, 3, 9)]
    alone = [model(input_ids=r).logits for r in rows]
    sdpa_calls.clear()
    ids = torch.cat(rows, dim=1)
    position_ids = torch.cat([torch.arange(r.shape[1]) for r in rows]).unsqueeze(0)
    packed = model(input_ids=ids, position_ids=position_ids, use_cache=False).logits
    assert sdpa_calls == [7, 3, 9, 7, 3, 9]  # two layers, one SDPA call per row
    assert torch.allclose(packed, torch.cat(alone, dim=1), atol=1e-5)
    # without the row-by-row attention, the block-diagonal mask transformers builds when training
    # (no KV cache) gives the same logits
    plain = tiny()
    assert torch.allclose(plain(input_ids=ids, position_ids=position_ids, use_cache=False).logits, packed, atol=1e-5)


def test_packed_dpo_batches_give_the_padded_batches_outputs_and_gradients(sdpa_calls):
    plain, rows = tiny(), tiny()
    assert packing.use_segment_attention(rows) and packing.pack_padded_batches(rows)
    for m in (plain, rows):
        trl_utils.add_fused_lm_head(m, outputs=OUTPUTS)
    ids, attention, labels = padded_batch()
    with labelled_positions_only():
        a = plain(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
        sdpa_calls.clear()
        b = rows(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
    assert sdpa_calls == [12, 9, 5, 11, 12, 9, 5, 11]  # the real tokens of each row, no padding
    for name in (*OUTPUTS, "label_mask"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape == (4, 11), name
        assert torch.allclose(x.float(), y.float(), atol=1e-5), name
    assert abs(a.loss.item() - b.loss.item()) < 1e-6
    a.loss.backward()
    b.loss.backward()
    pairs = [(p.grad, q.grad) for p, q in zip(plain.parameters(), rows.parameters(), strict=True) if p.grad is not None]
    assert pairs and all(torch.allclose(x, y, atol=1e-6) for x, y in pairs)


def test_batches_packing_cannot_help_pass_through_unchanged():
    plain, rows = tiny(), tiny()
    assert packing.use_segment_attention(rows) and packing.pack_padded_batches(rows)
    ids, attention, _ = padded_batch()
    full = torch.ones_like(attention)
    empty_row = attention.clone()
    empty_row[0] = 0
    for kwargs in (
        {"input_ids": ids},  # no mask
        {"input_ids": ids, "attention_mask": full},  # no padding
        {"input_ids": ids, "attention_mask": attention, "position_ids": torch.arange(12).expand(4, 12)},
    ):
        assert torch.allclose(plain(**kwargs).logits, rows(**kwargs).logits, atol=1e-5)
    # a row without tokens cannot be packed: the padded batch runs as it is
    out = rows(input_ids=ids, attention_mask=empty_row)
    assert out.logits.shape == (4, 12, 301)
    # generation (a KV cache) is not packed either
    generated = rows.generate(ids[:1, :5], max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, plain.generate(ids[:1, :5], max_new_tokens=3, do_sample=False))


def test_only_plain_causal_sdpa_models_switch_and_the_switch_is_undone_before_saving(tmp_path):
    eager = tiny(attn="eager")
    assert not packing.use_segment_attention(eager)
    assert not packing.pack_padded_batches(eager)
    other = tiny()
    other.config.model_type = "gemma2"  # soft-capping, sliding windows: not plain causal
    assert not packing.use_segment_attention(other)
    model = tiny()
    assert packing.use_segment_attention(model)
    assert model.config._attn_implementation == packing.SEGMENTS
    packing.restore_attention(model)
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    assert packing.SEGMENTS not in (tmp_path / "config.json").read_text()


def test_row_bounds_reads_only_one_sequence_packed_from_zero():
    assert packing.row_bounds(torch.tensor([[0, 1, 2, 0, 1, 0]])) == [(0, 3), (3, 5), (5, 6)]
    assert packing.row_bounds(torch.tensor([[0, 1, 2, 3]])) == [(0, 4)]
    assert packing.row_bounds(torch.tensor([[3, 4, 0, 1]])) is None  # starts mid-row: not a packed batch
    assert packing.row_bounds(torch.tensor([[0, 1], [0, 1]])) is None  # several sequences
    assert packing.row_bounds(None) is None


@pytest.mark.slow
def test_real_dpo_steps_packed_and_padded_give_the_same_losses(tmp_path, monkeypatch):
    from failforge.models.registry import resolve_weights
    from failforge.run.store import RunStore
    from failforge.train import TrainSettings, train_dpo, version_from_gguf

    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    sentence = "Count the apples in basket {i} twice and write the total down."
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Plan {i}."}],
            "chosen": " ".join(sentence.format(i=j) for j in range(1 + i % 4)),
            "rejected": " ".join(sentence.format(i=j).replace("apples", "pears") for j in range(1 + (i + 2) % 5)),
        }
        for i in range(8)
    ]
    settings = TrainSettings(kind="dpo", max_steps=3, batch_size=4, learning_rate=5e-4, lora={"r": 8},
                             precision="fp32", export_gguf=False, save_steps=10_000)
    losses = {}
    for side in ("packed", "padded"):
        if side == "padded":
            monkeypatch.setattr(packing, "use_segment_attention", lambda model: False)
        store = RunStore(tmp_path / f"{side}.sqlite")
        train_dpo(base, rows, settings, tmp_path / side, store=store, name=side, quiet=True, threads=2)
        steps = store.train_steps(side)
        losses[side] = [s["loss"] for s in steps]
        tokens = [(s["tokens"], s["real_tokens"]) for s in steps]
        store.close()
        if side == "packed":
            assert all(t == r for t, r in tokens)  # packed: every token slot computed is a real token
        else:
            assert any(t > r for t, r in tokens)
    assert len(losses["packed"]) == len(losses["padded"]) == 3
    assert losses["packed"][0] == pytest.approx(0.6931, abs=1e-3)
    for a, b in zip(losses["packed"], losses["padded"], strict=True):
        assert a == pytest.approx(b, abs=2e-3)
    assert losses["packed"][-1] < losses["packed"][0]  # it learned


def test_bf16_cpu_rows_attend_in_float32(monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    seen = []
    inner = sdpa.sdpa_attention_forward
    monkeypatch.setattr(sdpa, "sdpa_attention_forward",
                        lambda module, query, *a, **k: seen.append(query.dtype) or inner(module, query, *a, **k))
    model = tiny()
    module = model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 4, 10, 16, generator=g).bfloat16() for _ in range(3))
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16 step: autocast cannot cast them back
        out, _ = packing.segment_attention(module, q, k, v, None, position_ids=position_ids, scaling=0.25, dropout=0.0)
    assert seen == [torch.float32, torch.float32] and out.dtype == torch.bfloat16  # two rows, each in float32
    want, _ = packing._segment_attention(module, q.float(), k.float(), v.float(), None, position_ids=position_ids,
                                         scaling=0.25, dropout=0.0)
    assert torch.equal(out, want.bfloat16())
    same, _ = packing.segment_attention(module, q.float(), k.float(), v.float(), None, position_ids=position_ids,
                                        scaling=0.25, dropout=0.0)
    assert torch.equal(same, want)  # float32 rows attend as they did
