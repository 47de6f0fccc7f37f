"""transformers backend: a checkpoint folder (or a GGUF, converted once), optional LoRA.

Requests are generated with ``model.generate`` in left-padded batches of
``spec.batch_size`` (sorted by prompt length to waste little on padding). Any mix of
greedy and sampled requests, seeds, stop strings and lengths can share a batch:

* Token choice is done per row by :class:`_PerRowChooser`, a logits processor that
  picks each row's token with :func:`failforge.models.llamacpp.choose_token` (argmax,
  or temperature + top-p over a NumPy RNG seeded by ``request.seed``) and masks every
  other token, so ``generate`` itself runs greedily. One torch generator cannot serve
  rows with different seeds; a generator per row makes each sample reproducible from
  its seed alone, whatever else shares its batch, and the same seed and logits give
  the same token as the llama.cpp backend.
* Stopping is per row too (:class:`_PerRowStop`): end-of-generation tokens, the
  row's own stop strings and its own ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from failforge.errors import ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, fingerprint_of
from failforge.models.chat_template import CHATML, render_chat
from failforge.models.convert import cached_sha256, ensure_checkpoint, is_gguf, source_sha256
from failforge.models.llamacpp import choose_token
from failforge.models.registry import resolve_weights
from failforge.models.spec import ModelSpec

#: token texts llama.cpp also treats as end-of-generation, so both backends stop alike
_EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt")


def weights_sha(checkpoint: Path) -> str:
    """Identity of a checkpoint's weights: the source GGUF's sha, or the hash of its weight files."""
    converted = source_sha256(checkpoint)
    if converted:
        return converted
    files = sorted(f for g in _WEIGHT_GLOBS for f in checkpoint.glob(g))
    if not files:
        raise ModelUnavailable(f"checkpoint {checkpoint}: no weight files (*.safetensors, *.bin)")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{cached_sha256(f)}\n".encode())
    return h.hexdigest()


def adapter_sha(adapter: Path) -> str:
    """Identity of a PEFT adapter folder: its config plus its weight files."""
    h = hashlib.sha256((adapter / "adapter_config.json").read_bytes())
    for f in sorted(f for g in _WEIGHT_GLOBS for f in adapter.glob(g)):
        h.update(f"{f.name}:{cached_sha256(f)}\n".encode())
    return h.hexdigest()


def resolve_checkpoint(model: str) -> Path:
    """A known name, GGUF file or checkpoint folder -> a checkpoint folder."""
    p = resolve_weights(model)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelUnavailable(f"model {model!r}: {p} has no config.json (not a transformers checkpoint)")
        return p
    if is_gguf(p):
        return ensure_checkpoint(p)
    raise ModelUnavailable(f"model {model!r}: {p} is neither a checkpoint folder nor a GGUF file")


class TransformersModel(ChatModel):
    backend = "transformers"

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = spec.model
        self.batch_size = spec.batch_size
        self.preferred_chunk = spec.batch_size
        self.checkpoint = resolve_checkpoint(spec.model)
        self._weights_sha = weights_sha(self.checkpoint)
        self.adapter: Path | None = None
        self._adapter_sha = None
        if spec.adapter:
            self.adapter = Path(spec.adapter).expanduser()
            if not (self.adapter / "adapter_config.json").is_file():
                raise ModelUnavailable(f"adapter {spec.adapter!r}: no adapter_config.json there (not a PEFT adapter folder)")
            self._adapter_sha = adapter_sha(self.adapter)

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        dtype = "auto" if spec.dtype == "auto" else getattr(torch, spec.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint))
            model = AutoModelForCausalLM.from_pretrained(str(self.checkpoint), dtype=dtype)
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"model {spec.model!r}: transformers cannot load {self.checkpoint} ({_first_line(e)})") from None
        if self.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter))
        self.model = model.to(spec.device).eval()

        tok = self.tokenizer
        self.chat_template = spec.chat_template or tok.chat_template or CHATML
        self.eog_ids = self._eog_ids()
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else sorted(self.eog_ids)[0]

    # --- identity -----------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return fingerprint_of(
            backend=self.backend,
            weights=self._weights_sha,
            adapter=self._adapter_sha,
            chat_template=self.chat_template,
            dtype=self.spec.dtype,
        )

    def _eog_ids(self) -> set[int]:
        tok = self.tokenizer
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        special = set(tok.all_special_tokens) | set(getattr(tok, "added_tokens_encoder", {}) or {})
        for text in _EOG_TEXTS:
            if text in special:
                ids.add(tok.convert_tokens_to_ids(text))
        if not ids:
            raise ModelUnavailable(f"model {self.name!r}: the tokenizer names no end-of-sequence token")
        return ids

    # --- text <-> tokens ------------------------------------------------------
    def render(self, request: Request) -> str:
        tok = self.tokenizer
        return render_chat(
            self.chat_template, request.messages, bos_token=tok.bos_token or "", eos_token=tok.eos_token or ""
        )

    def prompt_tokens(self, request: Request) -> list[int]:
        ids = self.tokenizer(self.render(request), add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if len(ids) >= 2 and ids[0] == ids[1] == bos:  # template wrote a BOS and the tokenizer added one
            ids = ids[1:]
        return ids

    # --- generation ---------------------------------------------------------------
    def _complete(self, requests: list[Request]) -> list[Completion]:
        prompts = [self.prompt_tokens(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._generate([requests[i] for i in idx], [prompts[i] for i in idx])):
                out[i] = c
        return out  # type: ignore[return-value]

    def _generate(self, requests: list[Request], prompts: list[list[int]]) -> list[Completion]:
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: every row's last prompt token is at the end
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        stop = _PerRowStop(requests, self.tokenizer, self.eog_ids, width)
        chooser = _PerRowChooser(requests, stop)
        config = GenerationConfig(
            max_new_tokens=max(r.params.max_tokens for r in requests),
            do_sample=False,
            eos_token_id=sorted(self.eog_ids),
            pad_token_id=self.pad_id,
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=ids.to(self.spec.device),
                attention_mask=mask.to(self.spec.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([chooser]),
                stopping_criteria=StoppingCriteriaList([stop]),
            )
        latency = time.perf_counter() - t0
        gen = seqs[:, width:].tolist()
        results = []
        for row, r in enumerate(requests):
            n, reason = stop.ended[row] or (len(gen[row]), "length")
            toks = gen[row][:n]
            body = toks[:-1] if reason == "eog" else toks
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            if reason == "stop":
                text = _cut_at_stop(text, r.params.stop)
            results.append(
                Completion(
                    text=text,
                    prompt_tokens=len(prompts[row]),
                    completion_tokens=n,
                    latency_s=latency,
                    finish_reason="length" if reason == "length" else "stop",
                    sample_index=r.sample_index,
                    logprobs=chooser.logprobs[row][:n] if r.params.logprobs else None,
                )
            )
        return results

    def close(self) -> None:
        self.model = None


class _PerRowStop:
    """Stopping criteria with each row's own end: EOG token, stop string or max_tokens.

    ``ended[row]`` is ``(generated tokens, "eog" | "stop" | "length")`` once the row ends.
    """

    def __init__(self, requests: list[Request], tokenizer, eog_ids: set[int], prompt_width: int):
        self.requests = requests
        self.tokenizer = tokenizer
        self.eog_ids = eog_ids
        self.width = prompt_width
        self.ended: list[tuple[int, str] | None] = [None] * len(requests)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        n = input_ids.shape[1] - self.width
        for row, r in enumerate(self.requests):
            if self.ended[row] is not None:
                continue
            last = int(input_ids[row, -1])
            if last in self.eog_ids:
                self.ended[row] = (n, "eog")
            elif r.params.stop and _cut_at_stop(self._text(input_ids[row, self.width :]), r.params.stop) is not None:
                self.ended[row] = (n, "stop")
            elif n >= r.params.max_tokens:
                self.ended[row] = (n, "length")
        return torch.tensor([e is not None for e in self.ended], dtype=torch.bool, device=input_ids.device)

    def _text(self, ids) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)


class _PerRowChooser:
    """Logits processor that picks each row's next token itself (see the module docstring)."""

    def __init__(self, requests: list[Request], stop: _PerRowStop):
        self.requests = requests
        self.stop = stop
        self.rngs = [None if r.params.greedy else np.random.default_rng(r.seed % (1 << 64)) for r in requests]
        self.logprobs: list[list[float]] = [[] for _ in requests]

    def __call__(self, input_ids, scores):
        rows = scores.detach().float().cpu().numpy()
        chosen = np.zeros(len(rows), dtype=np.int64)
        for row, r in enumerate(self.requests):
            if self.stop.ended[row] is not None:
                chosen[row] = int(np.argmax(rows[row]))  # finished; generate pads it anyway
                continue
            p = r.params
            token, lp = choose_token(rows[row], p.greedy, p.temperature, p.top_p, self.rngs[row], p.logprobs)
            chosen[row] = token
            if p.logprobs:
                self.logprobs[row].append(lp)
        out = scores.new_full(scores.shape, float("-inf"))
        idx = scores.new_tensor(chosen, dtype=input_ids.dtype).unsqueeze(1)
        return out.scatter(1, idx, 0.0)


def _cut_at_stop(text: str, stops) -> str | None:
    """``text`` up to the earliest stop string, or None when none occurs."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else None


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
