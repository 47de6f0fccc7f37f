"""transformers backend and GGUF conversion on the bundled SmolLM2 weights."""

from __future__ import annotations

import pytest
from conftest_models import hf_model, smollm2_checkpoint, smollm2_gguf  # noqa: F401

from failforge.errors import ModelUnavailable
from failforge.models.base import Message, Request, SamplingParams
from failforge.models.spec import ModelSpec


def _req(text: str, **params) -> Request:
    return Request(messages=(Message(role="user", content=text),), params=SamplingParams(**params))


def test_bad_paths_are_one_line_errors(tmp_path):
    from failforge.models.convert import ensure_checkpoint
    from failforge.models.hf import TransformersModel

    with pytest.raises(ModelUnavailable, match="config.json"):
        TransformersModel(ModelSpec(backend="transformers", model=str(tmp_path)))
    with pytest.raises(ModelUnavailable, match="no such file"):
        ensure_checkpoint(tmp_path / "missing.gguf", root=tmp_path)
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelUnavailable, match="not a GGUF"):
        ensure_checkpoint(fake, root=tmp_path)


def test_missing_adapter_is_refused(smollm2_checkpoint, tmp_path):
    from failforge.models.hf import TransformersModel

    with pytest.raises(ModelUnavailable, match="adapter_config.json"):
        TransformersModel(ModelSpec(backend="transformers", model=str(smollm2_checkpoint), adapter=str(tmp_path)))


def test_converted_checkpoint_loads_trains_and_saves(smollm2_checkpoint, smollm2_gguf, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from failforge.models import convert

    assert convert.source_sha256(smollm2_checkpoint) == convert.cached_sha256(smollm2_gguf, smollm2_checkpoint.parent.parent)
    # a second call reuses the folder instead of converting again
    monkeypatch.setattr(convert, "_convert", lambda *a: pytest.fail("converted twice"))
    assert convert.ensure_checkpoint(smollm2_gguf, root=smollm2_checkpoint.parent.parent) == smollm2_checkpoint
    assert not list(smollm2_checkpoint.parent.glob(".*"))  # no temporary folder left behind

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_checkpoint), dtype=torch.float32)
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    ids = torch.tensor([[1, 4093, 198, 1780, 314, 260, 3575]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.save_pretrained(str(tmp_path / "saved"))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"), dtype=torch.float32)
    assert torch.equal(again.model.layers[3].mlp.up_proj.weight, model.model.layers[3].mlp.up_proj.weight)


@pytest.mark.slow
def test_left_padded_batch_equals_unbatched(hf_model):
    reqs = [
        _req("Hi", max_tokens=8),
        _req("Name three fruits, then explain which one is the sweetest and why.", max_tokens=8),
        _req("Who wrote Hamlet?", max_tokens=8),
    ]
    batched = hf_model.complete(reqs)  # one left-padded batch
    single = [hf_model.complete([r])[0] for r in reqs]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]
    assert [c.prompt_tokens for c in batched] == [len(hf_model.prompt_tokens(r)) for r in reqs]
    assert len({c.prompt_tokens for c in batched}) == 3  # the rows really were padded


def test_seeded_sampling_and_stops_per_row(hf_model):
    target = _req("Tell me something about cats.", temperature=1.0, top_p=0.95, max_tokens=6, seed=3, logprobs=True)
    greedy = _req("Count from 1 to 20, separated by commas.", max_tokens=12)
    alone = hf_model.complete([target])[0]
    mixed = hf_model.complete([greedy, target])
    assert mixed[1].text == alone.text and mixed[1].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    assert len(alone.logprobs) == alone.completion_tokens

    text = mixed[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = hf_model.complete([_req("Count from 1 to 20, separated by commas.", max_tokens=12, stop=[stop]), target])
    assert cut[0].text == text[: text.find(stop)] and cut[0].finish_reason == "stop"
    assert cut[1].text == alone.text  # a neighbour's stop string does not stop this row


def test_adapter_changes_fingerprint_and_answers(hf_model, smollm2_checkpoint, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from failforge.models.hf import TransformersModel

    def make_adapter(path, seed):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(smollm2_checkpoint), dtype=torch.float32)
        cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, cfg).save_pretrained(str(path))

    make_adapter(tmp_path / "a", 0)
    make_adapter(tmp_path / "b", 1)
    spec = dict(backend="transformers", model=str(smollm2_checkpoint), batch_size=1)
    with_a = TransformersModel(ModelSpec(**spec, adapter=str(tmp_path / "a")))
    with_b = TransformersModel(ModelSpec(**spec, adapter=str(tmp_path / "b")))
    assert len({hf_model.fingerprint, with_a.fingerprint, with_b.fingerprint}) == 3
    req = _req("Who wrote Hamlet?", max_tokens=1, logprobs=True)
    assert with_a.complete([req])[0].logprobs != hf_model.complete([req])[0].logprobs
