"""The pieces of a vLLM replica pool that run without a GPU: the placement it asks for,
and the async-engine replica driven through a stand-in ``vllm`` module (the real engine
needs a GPU; this checks failforge's side of the calls, not vLLM itself)."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from failforge.errors import ConfigError
from failforge.models.base import Request, SamplingParams, as_conversation
from failforge.models.spec import ModelSpec


def pool(**over) -> ModelSpec:
    inner = {"backend": "vllm", "model": "/models/m", **over.pop("inner", {})}
    return ModelSpec.model_validate({"backend": "ray", "replicas": 2, "cpus_per_replica": 4, "inner": inner, **over})


def test_placement_one_gpu_bundle_per_tensor_parallel_rank_strictly_packed():
    from failforge.models.raypool import bundles_for

    assert bundles_for(pool(gpus_per_replica=1)) == ([{"CPU": 4.0, "GPU": 1.0}], "PACK")
    bundles, strategy = bundles_for(pool(gpus_per_replica=4, ray_resources={"h100_replica": 1},
                                         inner={"engine_args": {"tensor_parallel_size": 4}}))
    assert strategy == "STRICT_PACK"
    assert bundles == [{"CPU": 4.0, "GPU": 1.0, "h100_replica": 1.0}] + [{"GPU": 1.0}] * 3
    with pytest.raises(ConfigError, match="tensor_parallel_size 4"):
        bundles_for(pool(gpus_per_replica=2, inner={"engine_args": {"tensor_parallel_size": 4}}))


def test_a_ray_spec_needs_an_inner_spec_and_no_pool_in_a_pool():
    with pytest.raises(ValueError, match="needs inner"):
        ModelSpec.model_validate({"backend": "ray"})
    with pytest.raises(ValueError, match="cannot hold another ray pool"):
        ModelSpec.model_validate({"backend": "ray", "inner": {"backend": "ray", "inner": {}}})
    with pytest.raises(ValueError, match="only for backend 'ray'"):
        ModelSpec.model_validate({"inner": {}})


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in for the parts of vllm the replica calls."""
    seen: dict = {"requests": []}

    class SamplingParamsV:
        def __init__(self, **kw):
            self.kw = kw

    class AsyncEngineArgs:
        def __init__(self, model, **kw):
            seen["engine_args"] = {"model": model, **kw}

    class Tokenizer:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt, chat_template):
            assert tokenize is False and add_generation_prompt is True
            return "|".join(m["content"] for m in messages) + "|assistant:"

    class Engine:
        async def get_tokenizer(self):
            return Tokenizer()

        async def generate(self, prompt, sampling, request_id, lora_request=None):
            seen["requests"].append((prompt, sampling.kw, request_id, lora_request))
            await asyncio.sleep(0)
            out = types.SimpleNamespace(text=f"answer to {prompt}", token_ids=[1, 2, 3], logprobs=None, finish_reason="stop")
            yield types.SimpleNamespace(outputs=[out], prompt_token_ids=[7] * 5, finished=False)
            yield types.SimpleNamespace(outputs=[out], prompt_token_ids=[7] * 5, finished=True)

    class AsyncLLMEngine:
        @staticmethod
        def from_engine_args(args):
            return Engine()

    class LoRARequest:
        def __init__(self, name, lora_id, path):
            self.name, self.lora_id, self.path = name, lora_id, path

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams, vllm.AsyncEngineArgs, vllm.AsyncLLMEngine = SamplingParamsV, AsyncEngineArgs, AsyncLLMEngine
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return seen


def test_the_async_engine_replica_sends_each_request_with_its_seed_and_the_adapter(fake_vllm, tmp_path):
    from failforge.models.raypool_vllm import AsyncVLLMModel

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    spec = ModelSpec(backend="vllm", model="org/model-70b", adapter=str(adapter),
                     engine_args={"tensor_parallel_size": 4, "max_model_len": 4096})
    model = AsyncVLLMModel(spec)
    assert model.engine_args["distributed_executor_backend"] == "ray" and model.engine_args["enable_lora"] is True
    params = SamplingParams(n=2, temperature=0.7, max_tokens=16, seed=40, stop=["\n"])
    reqs = [Request(messages=tuple(as_conversation("hi")), params=params, sample_index=i) for i in range(2)]

    async def go():
        await model.start()
        return await model.acomplete(reqs)

    outs = asyncio.run(go())
    assert [o.text for o in outs] == ["answer to hi|assistant:"] * 2
    assert [o.sample_index for o in outs] == [0, 1] and outs[0].prompt_tokens == 5 and outs[0].completion_tokens == 3
    sent = fake_vllm["requests"]
    assert [kw["seed"] for _, kw, _, _ in sent] == [40, 41]  # each sample its own seed
    assert all(kw["n"] == 1 and kw["stop"] == ["\n"] and kw["temperature"] == 0.7 for _, kw, _, _ in sent)
    assert len({rid for _, _, rid, _ in sent}) == 2
    assert all(lora is not None and lora.path == str(adapter) for *_, lora in sent)  # the adapter per request
    assert fake_vllm["engine_args"]["model"] == "org/model-70b"


def test_the_async_replica_fingerprint_is_the_in_process_backends(fake_vllm):
    """Answers cached by the in-process vLLM backend are found by a pool of it (same formula)."""
    import json

    from failforge.models.base import fingerprint_of
    from failforge.models.raypool_vllm import AsyncVLLMModel
    from failforge.models.vllm import _ANSWER_ARGS, _weights_identity

    spec = ModelSpec(backend="vllm", model="org/model-70b", engine_args={"max_model_len": 4096, "dtype": "bfloat16"})
    expected = fingerprint_of(
        backend="vllm",
        weights=_weights_identity("org/model-70b"),
        adapter=None,
        chat_template=None,
        engine_args=json.dumps({k: spec.engine_args.get(k) for k in _ANSWER_ARGS}, sort_keys=True, default=str),
    )
    assert AsyncVLLMModel(spec).fingerprint == expected
