"""The one contract every model backend implements.

A backend answers a batch of *requests*: one chat conversation, the sampling
parameters, and the index of the sample (0..n-1). Splitting ``n`` into separate
requests is what makes every single sample cacheable and resumable: sample ``i``
of a conversation is always generated with seed ``seed + i``, so a resumed run
asks for exactly the samples it is missing and gets the same answers.

Users call :meth:`ChatModel.generate` (or ``agenerate``) with conversations and
``SamplingParams``; backends implement :meth:`ChatModel._complete`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterator
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


#: how cache keys encode JSON (``json.dumps(..., sort_keys=True, ensure_ascii=False)``)
_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str

    @property
    def key_json(self) -> str:
        """This message as a cache key encodes it: ``json.dumps(self.model_dump(),
        sort_keys=True, ensure_ascii=False)``, spelled out (tests/test_request_key.py
        checks the two agree)."""
        return f'{{"content": {_KEY_JSON.encode(self.content)}, "role": {_KEY_JSON.encode(self.role)}}}'


Conversation = list[Message]


def as_conversation(item: str | Conversation | list[dict]) -> Conversation:
    """A bare string becomes a single user turn; dicts become Messages."""
    if isinstance(item, str):
        return [Message(role="user", content=item)]
    return [m if isinstance(m, Message) else Message(**m) for m in item]


class SamplingParams(BaseModel):
    """Sampling parameters. ``temperature == 0`` means greedy decoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int = 0
    logprobs: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_tuple(cls, v):
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        if not isinstance(v, (list, tuple)):  # tuple() of a mapping would keep its keys
            raise ValueError("expected a string or a list of strings")
        return tuple(v)

    @property
    def key_json(self) -> str:
        """These parameters as a cache key encodes them: without ``n``."""
        return _params_key_json(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


# A run uses a handful of parameter sets for millions of requests. Kept by value (frozen
# models hash and compare by their fields), not on the object: ``model_copy`` would
# carry a value cached on the object over to a copy with other parameters.
@lru_cache(maxsize=1024)
def _params_key_json(params: SamplingParams) -> str:
    return _KEY_JSON.encode(params.model_dump(exclude={"n"}))


class Request(BaseModel):
    """One sample of one conversation: the unit that is cached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...]
    params: SamplingParams
    sample_index: int = 0

    @property
    def seed(self) -> int:
        """The seed of this very sample (``params.seed + sample_index``)."""
        return self.params.seed + self.sample_index

    def key(self, fingerprint: str) -> str:
        """Cache key: the SHA-256 of ``json.dumps({"fingerprint", "messages", "params"
        (without ``n``: it does not change sample i), "sample_index", "seed"},
        sort_keys=True, ensure_ascii=False)``.

        The text is put together from the JSON of each message and of the parameters,
        each encoded once per object (the same text ``json.dumps`` gives for the whole,
        tests/test_request_key.py): every model call computes a key, and encoding the
        whole payload anew each time was a third of the run cache's own cost per call
        (bench/driver_scale.py)."""
        messages = ", ".join(m.key_json for m in self.messages)
        blob = (
            f'{{"fingerprint": {_KEY_JSON.encode(fingerprint)}, "messages": [{messages}], '
            f'"params": {self.params.key_json}, "sample_index": {int(self.sample_index)}, "seed": {int(self.seed)}}}'
        )
        return hashlib.sha256(blob.encode()).hexdigest()


class Completion(BaseModel):
    """One generated answer with its cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    sample_index: int = 0
    logprobs: list[float] | None = None
    cached: bool = False
    #: why there is no answer: the server refused this one request (e.g. "HTTP 400: ... context ...")
    error: str | None = None


def expand(conversations: list[Conversation], params: SamplingParams) -> list[Request]:
    """Conversations x n samples -> requests, conversation-major."""
    return [
        Request(messages=tuple(conv), params=params, sample_index=i)
        for conv in conversations
        for i in range(params.n)
    ]


def regroup(completions: list[Completion], n: int) -> list[list[Completion]]:
    return [completions[i : i + n] for i in range(0, len(completions), n)]


class ChatModel(ABC):
    """A model that answers chat conversations.

    Subclasses implement ``_complete`` (and may override ``_acomplete`` when they
    are natively asynchronous) plus ``fingerprint``.
    """

    #: backend name, e.g. "llamacpp"
    backend: str = "base"
    #: the user-facing model name (as configured)
    name: str = ""
    #: requests handed over at a time by the default ``stream`` (a backend's batch)
    preferred_chunk: int = 16
    #: natively async backends: requests the run cache keeps in flight at once
    max_in_flight: int = 16

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identity of the weights + adapter + chat template + backend.

        Any change to what the model would answer must change the fingerprint, so no
        cached answer outlives the weights it came from.
        """

    @abstractmethod
    def _complete(self, requests: list[Request]) -> list[Completion]:
        """Answer every request, in order. One Completion per request."""

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        return await asyncio.to_thread(self._complete, requests)

    # --- public API -----------------------------------------------------
    def complete(self, requests: list[Request]) -> list[Completion]:
        return self._complete(list(requests))

    async def acomplete(self, requests: list[Request]) -> list[Completion]:
        return await self._acomplete(list(requests))

    def stream(self, requests: list[Request], chunk_size: int | None = None) -> Iterator[list[tuple[int, Completion]]]:
        """Answer every request, yielding groups of ``(index, completion)`` as they finish.

        The run cache stores each group as it comes, so a finished answer is kept while
        the others go on. The default answers ``chunk_size`` (``preferred_chunk``)
        requests at a time through ``_complete``; a backend that decodes many requests
        together overrides ``_stream`` to hand out each answer the moment it is done.
        """
        return self._stream(list(requests), chunk_size or self.preferred_chunk)

    def _stream(self, requests: list[Request], chunk_size: int) -> Iterator[list[tuple[int, Completion]]]:
        for i in range(0, len(requests), chunk_size):
            yield list(enumerate(self._complete(requests[i : i + chunk_size]), start=i))

    def generate(
        self, conversations: list[str | Conversation], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """``n`` completions for each conversation."""
        params = params or SamplingParams()
        convs = [as_conversation(c) for c in conversations]
        return regroup(self.complete(expand(convs, params)), params.n)

    async def agenerate(
        self, conversations: list[str | Conversation], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        params = params or SamplingParams()
        convs = [as_conversation(c) for c in conversations]
        return regroup(await self.acomplete(expand(convs, params)), params.n)

    def close(self) -> None:
        """Release weights, sessions, servers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_sync(coro: Coroutine):
    """Run a coroutine to completion from sync code, also when a loop is running (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def fingerprint_of(**parts) -> str:
    """Stable short hash of the parts that determine a model's answers."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()
