"""Backend "vllm": vLLM in-process, for machines with a GPU.

vLLM batches every request of a call itself (continuous batching), so a call hands
it all requests at once, each with its own ``SamplingParams`` and seed. vLLM is an
optional extra and is imported only when this backend is built.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from failforge.errors import ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, file_sha256, fingerprint_of
from failforge.models.registry import KNOWN_MODELS, resolve_weights
from failforge.models.spec import ModelSpec

MISSING_EXTRA = "backend 'vllm' needs the optional extra: pip install 'failforge[vllm]'"

#: engine arguments that change what the model answers (the rest only change speed)
_ANSWER_ARGS = ("dtype", "quantization", "revision", "tokenizer", "tokenizer_revision", "max_model_len", "hf_overrides")


def _weights_identity(model: str) -> dict[str, Any]:
    """What identifies the weights: a file's hash, a folder's config and weight files, or a hub id."""
    p = Path(model).expanduser()
    if p.is_file():
        return {"sha256": file_sha256(str(p))}
    if p.is_dir():
        # Hashing many GB of safetensors at every start is too slow; names, sizes and
        # the config pin a checkpoint folder well enough.
        h = hashlib.sha256()
        for f in sorted(p.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
                h.update(f"{f.relative_to(p)}:{f.stat().st_size}\n".encode())
            elif f.is_file() and f.name in ("config.json", "tokenizer_config.json", "generation_config.json"):
                h.update(f.read_bytes())
        return {"folder": h.hexdigest()}
    return {"hub_id": model}


def engine_setup(spec: ModelSpec) -> tuple[str, dict]:
    """The weights to load and the engine arguments for ``spec`` (LoRA enabled when it
    names an adapter, which must be a folder)."""
    model = str(resolve_weights(spec.model)) if spec.model in KNOWN_MODELS else spec.model
    args = dict(spec.engine_args)
    if spec.adapter:
        if not Path(spec.adapter).is_dir():
            raise ModelUnavailable(f"adapter {spec.adapter!r}: no such folder")
        args.setdefault("enable_lora", True)
    return model, args


def engine_fingerprint(backend: str, spec: ModelSpec, model: str, args: dict) -> str:
    """What decides a vLLM engine's answers: weights, adapter, template, answer-changing engine args."""
    return fingerprint_of(
        backend=backend,
        weights=_weights_identity(model),
        adapter=_weights_identity(spec.adapter) if spec.adapter else None,
        chat_template=spec.chat_template,
        engine_args=json.dumps({k: args.get(k) for k in _ANSWER_ARGS}, sort_keys=True, default=str),
    )


class VLLMModel(ChatModel):
    backend = "vllm"

    def __init__(self, spec: ModelSpec):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ModelUnavailable(MISSING_EXTRA) from None
        self.spec = spec
        self.name = spec.model
        model, args = engine_setup(spec)
        try:
            self._llm = vllm.LLM(model=model, **args)
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"vllm could not load {model!r}: {' '.join(str(e).split())[:300]}") from None
        self._vllm = vllm
        self._lora = LoRARequest("adapter", 1, spec.adapter) if spec.adapter else None
        self._fingerprint = engine_fingerprint(self.backend, spec, model, args)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _sampling(self, r: Request):
        p = r.params
        return self._vllm.SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=r.seed,
            logprobs=1 if p.logprobs else None,
        )

    def _complete(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        t0 = time.perf_counter()
        outs = self._llm.chat(
            [[m.model_dump() for m in r.messages] for r in requests],
            sampling_params=[self._sampling(r) for r in requests],
            use_tqdm=False,
            lora_request=self._lora,
            chat_template=self.spec.chat_template,
        )
        # vLLM batches the whole call: each request is charged an equal share of it
        share = (time.perf_counter() - t0) / len(requests)
        completions = []
        for r, out in zip(requests, outs):
            o = out.outputs[0]
            logprobs = None
            if r.params.logprobs and o.logprobs:
                # one dict per generated token: token id -> Logprob; take the sampled token's
                logprobs = [float(step[tok].logprob) for tok, step in zip(o.token_ids, o.logprobs)]
            completions.append(
                Completion(
                    text=o.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(o.token_ids),
                    latency_s=share,
                    finish_reason=o.finish_reason,
                    sample_index=r.sample_index,
                    logprobs=logprobs,
                )
            )
        return completions

    def close(self) -> None:
        self._llm = None
