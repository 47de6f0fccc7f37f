"""llama.cpp backend: several sequences decoded together through the low-level API.

llama-cpp-python's high-level ``Llama`` decodes one sequence at a time. Here each
request gets its own KV-cache sequence (``seq_id``) in one context, and every
``llama_decode`` call carries one new token for each running sequence plus prompt
tokens of newly admitted ones (continuous batching: a finished sequence's slot is
freed with ``llama_memory_seq_rm`` and refilled at once). Each answer is handed out
(``stream``) at the step that finishes it, so the run cache stores it while the
others go on decoding and the batch stays full until the work runs out. Token choice happens
here, per request: greedy is argmax; sampling uses the request's own RNG seeded by
``request.seed``, so a sample never depends on which other requests share its batch.

No sampler defaults sneak in: there is no repeat penalty, top-k or min-p, only the
request's temperature and top-p.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, fingerprint_of
from failforge.models.chat_template import CHATML, render_chat
from failforge.models.convert import cached_sha256, is_gguf
from failforge.models.registry import resolve_weights
from failforge.models.spec import ModelSpec

log = logging.getLogger("failforge.llamacpp")

#: prompt tokens fed per ``llama_decode`` call at most (longer prompts take several)
N_BATCH = 512

# ggml_log_level as the bundled llama.cpp numbers it (NONE=0, DEBUG=1, INFO=2, WARN=3,
# ERROR=4, CONT=5); llama-cpp-python's own table is from an older enum and prints INFO
# lines as warnings.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_callback = None  # the C callback must outlive every call into llama.cpp


def _route_native_logs(llama_cpp) -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr."""
    global _log_callback
    if _log_callback is None:

        def forward(level, text, _user):
            # model loading prints hundreds of INFO lines: they go to DEBUG, as do CONT pieces
            log.log(_LOG_LEVELS.get(level, logging.DEBUG), text.decode("utf-8", "replace").rstrip())

        _log_callback = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def choose_token(
    logits: np.ndarray,
    greedy: bool,
    temperature: float,
    top_p: float,
    rng: np.random.Generator | None,
    want_logprob: bool = False,
) -> tuple[int, float | None]:
    """Pick the next token from one row of logits; also its log-probability if asked.

    Greedy is argmax. Sampling is temperature then nucleus (top-p) over the request's
    own RNG. The log-probability is under the model's unscaled distribution (T=1), as
    OpenAI-compatible servers report it. Shared with the transformers backend so both
    backends turn the same logits and seed into the same token.
    """
    x = np.asarray(logits, dtype=np.float64)
    if greedy:
        token = int(np.argmax(x))
    else:
        z = x / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        if top_p < 1.0:
            cum = np.cumsum(p[order])
            keep = int(np.searchsorted(cum, top_p)) + 1  # smallest prefix reaching top_p
            order = order[:keep]
        q = p[order] / p[order].sum()
        token = int(order[min(int(np.searchsorted(np.cumsum(q), rng.random(), side="right")), len(order) - 1)])
    if not want_logprob:
        return token, None
    m = x.max()
    return token, float(x[token] - m - np.log(np.exp(x - m).sum()))


@dataclass
class _Seq:
    """One request while it runs in a KV-cache sequence."""

    index: int  # position in the request list
    seq_id: int
    prompt: list[int]
    max_new: int
    stop: tuple[str, ...]
    greedy: bool
    temperature: float
    top_p: float
    want_logprobs: bool
    rng: np.random.Generator | None
    started: float
    fed: int = 0  # prompt tokens already decoded
    out: list[int] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None

    @property
    def n_past(self) -> int:
        return self.fed + len(self.out) - (1 if self.out else 0)


class LlamaCppModel(ChatModel):
    backend = "llamacpp"

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = spec.model
        self.path = resolve_weights(spec.model)
        if not is_gguf(self.path):
            raise ModelUnavailable(f"model {spec.model!r}: {self.path} is not a GGUF file (llamacpp needs one)")
        if spec.batch_size > 256:  # LLAMA_MAX_SEQ: llama.cpp's limit on sequences in one context
            raise ConfigError(f"batch_size: llamacpp decodes at most 256 sequences together, got {spec.batch_size}")
        self.batch_size = spec.batch_size
        self.preferred_chunk = spec.batch_size
        #: called before each request joins the batch; raising stops admitting more (the run's token budget)
        self.gate: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._model = self._ctx = self._batch = self._adapter = None
        self._weights_sha = cached_sha256(self.path)
        self._adapter_sha = self._check_adapter(spec.adapter)

        import llama_cpp

        self._ll = llama_cpp
        _route_native_logs(llama_cpp)
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ModelUnavailable(f"model {spec.model!r}: llama.cpp could not load {self.path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        threads = spec.n_threads or os.cpu_count() or 1
        cparams = llama_cpp.llama_context_default_params()
        # One KV stream per sequence (kv_unified=False): the context is split evenly, so
        # every sequence gets the full spec.n_ctx.
        cparams.n_seq_max = self.batch_size
        # llama.cpp sizes each stream in multiples of 256 cells; ask for that so it need not round
        cparams.n_ctx = -(-spec.n_ctx // 256) * 256 * self.batch_size
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise ModelUnavailable(
                f"model {spec.model!r}: llama.cpp could not create a context (n_ctx={spec.n_ctx}, batch_size={spec.batch_size})"
            )
        # llama.cpp may round the context up and clamp n_batch to it: use what it really has
        self.n_ctx_seq = min(spec.n_ctx, llama_cpp.llama_n_ctx_seq(self._ctx))
        self.n_batch = min(N_BATCH, llama_cpp.llama_n_batch(self._ctx))
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        if spec.adapter:
            self._load_adapter(spec.adapter)

        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_id = llama_cpp.llama_vocab_bos(self._vocab)
        self.chat_template = spec.chat_template or self._meta("tokenizer.chat_template") or CHATML
        self._bos_text = self._token_text(self.bos_id)
        self._eos_text = self._token_text(llama_cpp.llama_vocab_eos(self._vocab))
        self._piece_buf = ctypes.create_string_buffer(256)

    # --- identity -----------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return fingerprint_of(
            backend=self.backend,
            weights=self._weights_sha,
            adapter=self._adapter_sha,
            chat_template=self.chat_template,
        )

    @staticmethod
    def _check_adapter(adapter: str | None) -> str | None:
        if not adapter:
            return None
        p = Path(adapter).expanduser()
        if not p.exists():
            raise ModelUnavailable(f"adapter {adapter!r}: no such file")
        if not is_gguf(p):
            raise ModelUnavailable(
                f"adapter {adapter!r}: llamacpp needs a GGUF LoRA file (convert a PEFT folder with"
                " llama.cpp's convert_lora_to_gguf.py, or use backend: transformers)"
            )
        return cached_sha256(p)

    def _load_adapter(self, adapter: str) -> None:
        ll = self._ll
        self._adapter = ll.llama_adapter_lora_init(self._model, str(Path(adapter).expanduser()).encode())
        if not self._adapter:
            self.close()
            raise ModelUnavailable(f"adapter {adapter!r}: llama.cpp could not load it for {self.path.name}")
        adapters = (ll.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if ll.llama_set_adapters_lora(self._ctx, adapters, 1, scales) != 0:
            self.close()
            raise ModelUnavailable(f"adapter {adapter!r}: llama.cpp could not apply it")

    # --- text <-> tokens ------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (self._ll.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", "replace")

    def render(self, request: Request) -> str:
        return render_chat(self.chat_template, request.messages, bos_token=self._bos_text, eos_token=self._eos_text)

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokens of prompt text; special tokens written in the text (``<|im_start|>``) are parsed."""
        add = self.add_bos if add_bos is None else add_bos
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add, True)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed ({n})")
        toks = list(buf[:n])
        # A template that writes the BOS itself plus a vocab that adds one gives a double
        # BOS, which shifts every answer; keep one.
        if len(toks) >= 2 and toks[0] == toks[1] == self.bos_id:
            toks = toks[1:]
        return toks

    def prompt_tokens(self, request: Request) -> list[int]:
        return self.tokenize(self.render(request))

    def _piece(self, token: int) -> bytes:
        n = self._ll.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        return self._piece_buf.raw[: max(n, 0)]

    # --- generation -------------------------------------------------------------
    def _complete(self, requests: list[Request]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        for group in self._stream(requests, self.batch_size):
            for i, c in group:
                results[i] = c
        return results  # type: ignore[return-value]

    def _stream(self, requests: list[Request], chunk_size: int) -> Iterator[list[tuple[int, Completion]]]:
        # chunk_size is not used: every request joins the running batch as a slot frees
        if not requests:
            return
        if self._ctx is None:
            raise RuntimeError("LlamaCppModel is closed")
        with self._lock:
            yield from self._run(requests)

    def _new_seq(self, index: int, request: Request, seq_id: int) -> _Seq:
        prompt = self.prompt_tokens(request)
        room = self.n_ctx_seq - len(prompt)
        if room < 1:
            raise ConfigError(
                f"n_ctx: a prompt of {len(prompt)} tokens does not fit the context window of {self.n_ctx_seq} tokens"
            )
        p = request.params
        return _Seq(
            index=index,
            seq_id=seq_id,
            prompt=prompt,
            max_new=min(p.max_tokens, room),
            stop=p.stop,
            greedy=p.greedy,
            temperature=p.temperature,
            top_p=p.top_p,
            want_logprobs=p.logprobs,
            rng=None if p.greedy else np.random.default_rng(request.seed % (1 << 64)),
            started=time.perf_counter(),
        )

    def _run(self, requests: list[Request]) -> Iterator[list[tuple[int, Completion]]]:
        """Decode every request; after each step, yield the ones that finished in it."""
        ll = self._ll
        pending = deque(range(len(requests)))
        stopped: BaseException | None = None  # what the gate raised: admit no more, finish the rest
        free_ids = list(range(self.batch_size - 1, -1, -1))
        running: list[_Seq] = []
        batch = self._batch
        while pending or running:
            if not running:
                # nothing is running (the start, or a whole batch just ended): start clean
                ll.llama_memory_clear(self._mem, True)
            while pending and free_ids:
                if self.gate is not None:
                    try:
                        self.gate()
                    except Exception as e:  # the token budget: the sequences running finish and are handed out
                        stopped = e
                        pending.clear()
                        break
                i = pending.popleft()
                running.append(self._new_seq(i, requests[i], free_ids.pop()))
            if not running:
                break
            # Tokens in ascending seq_id order: llama.cpp decodes a batch whose streams come
            # out of order markedly slower (measured 30-50% per step with 4 streams).
            running.sort(key=lambda s: s.seq_id)
            # Fill the batch: one token for each decoding sequence; prompt tokens of newly
            # admitted ones in the room left (a long prompt takes several steps).
            n = 0
            outputs: list[tuple[int, _Seq]] = []
            room = self.n_batch - sum(s.fed == len(s.prompt) for s in running)
            for s in running:
                if s.fed == len(s.prompt):
                    n = self._put(batch, n, s.out[-1], s.n_past, s.seq_id, True)
                    outputs.append((n - 1, s))
                elif room > 0:
                    take = min(len(s.prompt) - s.fed, room)
                    room -= take
                    for j in range(take):
                        last = s.fed + j == len(s.prompt) - 1
                        n = self._put(batch, n, s.prompt[s.fed + j], s.fed + j, s.seq_id, last)
                    s.fed += take
                    if s.fed == len(s.prompt):
                        outputs.append((n - 1, s))
            batch.n_tokens = n
            rc = ll.llama_decode(self._ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc}")
            for pos, s in outputs:
                ptr = ll.llama_get_logits_ith(self._ctx, pos)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                self._step(s, logits)
            finished: list[tuple[int, Completion]] = []
            for s in [s for s in running if s.finish]:
                running.remove(s)
                ll.llama_memory_seq_rm(self._mem, s.seq_id, -1, -1)
                free_ids.append(s.seq_id)
                free_ids.sort(reverse=True)  # pop() hands out the lowest free id
                finished.append((s.index, Completion(
                    text=s.text,
                    prompt_tokens=len(s.prompt),
                    completion_tokens=len(s.out),
                    latency_s=time.perf_counter() - s.started,
                    finish_reason=s.finish,
                    sample_index=requests[s.index].sample_index,
                    logprobs=s.logprobs if s.want_logprobs else None,
                )))
            if finished:
                # the caller stores these now; their slots are refilled at the next step
                yield finished
        if stopped is not None:
            raise stopped

    @staticmethod
    def _put(batch, n: int, token: int, pos: int, seq_id: int, output: bool) -> int:
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq_id
        batch.logits[n] = output
        return n + 1

    def _step(self, s: _Seq, logits: np.ndarray) -> None:
        token, logprob = choose_token(logits, s.greedy, s.temperature, s.top_p, s.rng, s.want_logprobs)
        s.out.append(token)
        if s.want_logprobs:
            s.logprobs.append(logprob)
        if self._ll.llama_vocab_is_eog(self._vocab, token):
            s.finish = "stop"
            s.text = s.raw.decode("utf-8", "ignore")
            return
        s.raw += self._piece(token)
        s.text = s.raw.decode("utf-8", "ignore")
        if s.stop:
            hits = [i for i in (s.text.find(x) for x in s.stop) if i >= 0]
            if hits:
                s.text = s.text[: min(hits)]
                s.finish = "stop"
                return
        if len(s.out) >= s.max_new:
            s.finish = "length"

    # --- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            ll.llama_free(self._ctx)
            self._ctx = None
        if self._adapter is not None:
            ll.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        if self._model is not None:
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
