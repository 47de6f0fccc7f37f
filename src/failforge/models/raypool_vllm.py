"""vLLM's async engine inside a Ray replica (written for GPU clusters; not run on CPU here).

The in-process backend (``models/vllm.py``) hands a whole call to ``LLM.chat``, which
returns when the last request of the call is done. In a replica the driver sends
requests one by one, so each is handed to vLLM's ``AsyncLLMEngine`` the moment it
arrives and joins the engine's running batch (continuous batching across calls: no
barrier between one call's requests and the next).

A trained adapter (``adapter``: a PEFT LoRA folder the replica's node can read) is
passed with every request as a ``LoRARequest``: vLLM applies it per request on the
loaded base weights, so a retrained proposer needs no reload of the base model
(``engine_args: {enable_lora: true, max_lora_rank: R}`` sizes the LoRA slots).

With ``tensor_parallel_size`` T > 1 the engine runs its T workers as Ray tasks in the
replica's STRICT_PACK placement group (``distributed_executor_backend: ray``), one GPU
each, on one node.

The fingerprint is computed exactly as the in-process backend computes it, so answers
cached by one are found by the other.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time

from failforge.errors import ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request
from failforge.models.spec import ModelSpec
from failforge.models.vllm import MISSING_EXTRA, engine_fingerprint, engine_setup


class AsyncVLLMModel(ChatModel):
    backend = "vllm"

    def __init__(self, spec: ModelSpec):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ModelUnavailable(MISSING_EXTRA) from None
        self.spec = spec
        self.name = spec.model
        self.model_path, args = engine_setup(spec)
        if int(args.get("tensor_parallel_size", 1) or 1) > 1:
            args.setdefault("distributed_executor_backend", "ray")
        self.engine_args = args
        self._fingerprint = engine_fingerprint(self.backend, spec, self.model_path, args)
        self._engine = None
        self._tokenizer = None
        self._start_lock: asyncio.Lock | None = None
        self._ids = itertools.count()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    async def start(self) -> None:
        """Build the engine in the replica's event loop (the pool waits for this before any request)."""
        if self._engine is not None:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._engine is not None:
                return
            import vllm

            try:
                engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=self.model_path, **self.engine_args))
            except (OSError, ValueError) as e:
                raise ModelUnavailable(f"vllm could not load {self.model_path!r}: {' '.join(str(e).split())[:300]}") from None
            tokenizer = engine.get_tokenizer()
            if inspect.isawaitable(tokenizer):
                tokenizer = await tokenizer
            self._tokenizer = tokenizer
            self._lora = None
            if self.spec.adapter:
                from vllm.lora.request import LoRARequest

                # one id per adapter folder: a retrained adapter is a new LoRA, the base stays loaded
                self._lora = LoRARequest(f"adapter-{self._fingerprint}", abs(hash(self._fingerprint)) % (1 << 30) + 1, self.spec.adapter)
            self._engine = engine

    def _prompt(self, r: Request) -> str:
        return self._tokenizer.apply_chat_template(
            [m.model_dump() for m in r.messages],
            tokenize=False,
            add_generation_prompt=True,
            chat_template=self.spec.chat_template,
        )

    def _sampling(self, r: Request):
        import vllm

        p = r.params
        return vllm.SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=r.seed,
            logprobs=1 if p.logprobs else None,
        )

    async def _one(self, r: Request) -> Completion:
        await self.start()
        t0 = time.perf_counter()
        final = None
        async for out in self._engine.generate(self._prompt(r), self._sampling(r), f"ff-{next(self._ids)}", lora_request=self._lora):
            final = out
        o = final.outputs[0]
        logprobs = None
        if r.params.logprobs and o.logprobs:
            logprobs = [float(step[tok].logprob) for tok, step in zip(o.token_ids, o.logprobs)]
        return Completion(
            text=o.text,
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=len(o.token_ids),
            latency_s=time.perf_counter() - t0,
            finish_reason=o.finish_reason,
            sample_index=r.sample_index,
            logprobs=logprobs,
        )

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def _complete(self, requests: list[Request]) -> list[Completion]:
        return asyncio.run(self._acomplete(requests))

    def close(self) -> None:
        engine, self._engine = self._engine, None
        shutdown = getattr(engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
