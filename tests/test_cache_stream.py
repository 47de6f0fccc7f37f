"""The run cache without barriers: answers stored as they finish, backends kept full,
errors and the token budget (fake backends: this is the cache's logic)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from failforge.errors import BudgetReached
from failforge.models.base import ChatModel, Completion, Request, SamplingParams, fingerprint_of
from failforge.run.cached import CachedModel


def _answer(r: Request) -> Completion:
    text = f"a: {r.messages[-1].content}"
    return Completion(text=text, prompt_tokens=5, completion_tokens=5, sample_index=r.sample_index)


class Streaming(ChatModel):
    """Hands out one answer per step, last request first; before each step it waits
    (up to 5 s) until the store holds every answer handed out so far."""

    backend = "fake"
    name = "streaming"

    def __init__(self, store, batch: int = 4):
        self.store = store
        self.batch = batch
        self.seen_stored: list[int] = []
        self.calls: list[int] = []  # requests per stream call
        self.gate = None

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend="fake", name=self.name)

    def _complete(self, requests):
        return [_answer(r) for r in requests]

    def _stream(self, requests, chunk_size):
        self.calls.append(len(requests))
        for n, i in enumerate(reversed(range(len(requests)))):
            if self.gate is not None:
                self.gate()
            deadline = time.monotonic() + 5
            while self.store.call_totals()["calls"] < n and time.monotonic() < deadline:
                time.sleep(0.005)
            self.seen_stored.append(self.store.call_totals()["calls"])
            yield [(i, _answer(requests[i]))]


def test_every_request_goes_to_the_backend_at_once_and_each_answer_is_stored_as_it_comes(store):
    inner = Streaming(store)
    model = CachedModel(inner, store)
    outs = model.generate([f"q{i}" for i in range(10)], SamplingParams(max_tokens=4))
    assert [o[0].text for o in outs] == [f"a: q{i}" for i in range(10)]  # in request order
    assert inner.calls == [10]  # one call, no chunks: nothing waits for a chunk to end
    # before producing answer n the backend saw the n answers before it in the store
    assert inner.seen_stored == list(range(10))
    assert model.sent == 10 and store.call_totals()["calls"] == 10


def test_the_budget_gate_reaches_a_streaming_backend(store):
    inner = Streaming(store)
    model = CachedModel(inner, store, token_budget=25)  # 10 tokens an answer: 3 answers, then stop
    with pytest.raises(BudgetReached):
        model.generate([f"q{i}" for i in range(10)], SamplingParams(max_tokens=4))
    assert store.call_totals()["calls"] == 3


class Chunked(ChatModel):
    """A backend that does not stream: the default ``stream`` hands it chunks."""

    backend = "fake"
    name = "chunked"

    def __init__(self, short: bool = False):
        self.chunks: list[int] = []
        self.short = short

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend="fake", name=self.name)

    def _complete(self, requests):
        self.chunks.append(len(requests))
        out = [_answer(r) for r in requests]
        return out[:-1] if self.short else out


def test_a_backend_that_does_not_stream_gets_chunks_and_the_budget_is_checked_between(store):
    inner = Chunked()
    model = CachedModel(inner, store, chunk_size=3)
    model.generate([f"q{i}" for i in range(7)], SamplingParams(max_tokens=4))
    assert inner.chunks == [3, 3, 1]
    inner2 = Chunked()
    model2 = CachedModel(inner2, store, chunk_size=3, token_budget=store.tokens_spent() + 20)
    with pytest.raises(BudgetReached):
        model2.generate([f"r{i}" for i in range(7)], SamplingParams(max_tokens=4))
    assert inner2.chunks == [3]  # 30 tokens stored: no second chunk is computed


def test_a_backend_that_drops_answers_is_an_error(store):
    with pytest.raises(RuntimeError, match="returned 2 completions for 3 requests"):
        CachedModel(Chunked(short=True), store, chunk_size=3).generate(["a", "b", "c"])


class Async(ChatModel):
    """A natively async backend: each request takes its own time; "bad" ones fail."""

    backend = "fake"
    name = "async"
    max_in_flight = 3

    def __init__(self):
        self.in_flight = 0
        self.most = 0
        self.sent: list[str] = []
        self.lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend="fake", name=self.name)

    def _complete(self, requests):
        raise AssertionError("the run cache uses the async path of a natively async backend")

    async def _acomplete(self, requests):
        assert len(requests) == 1  # the window sends one request per call
        r = requests[0]
        text = r.messages[-1].content
        with self.lock:
            self.sent.append(text)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01 if text.startswith("bad") else 0.05)
            if text.startswith("bad"):
                raise ConnectionError(f"{text} failed")
            return [_answer(r)]
        finally:
            with self.lock:
                self.in_flight -= 1


def test_async_window_keeps_the_backend_full_and_no_more(store):
    inner = Async()
    model = CachedModel(inner, store)
    outs = model.generate([f"q{i}" for i in range(12)], SamplingParams(max_tokens=4))  # the sync API too
    assert [o[0].text for o in outs] == [f"a: q{i}" for i in range(12)]
    assert inner.most == 3 and store.call_totals()["calls"] == 12


def test_one_failed_request_lets_those_in_flight_finish_and_sends_no_more(store):
    inner = Async()
    model = CachedModel(inner, store)
    prompts = ["q0", "bad1", "q2", "q3", "q4", "q5"]
    with pytest.raises(ConnectionError, match="bad1 failed"):
        asyncio.run(model.agenerate(prompts, SamplingParams(max_tokens=4)))
    # q0 and q2 were in flight with bad1: they finished and were stored; nothing after
    assert inner.sent == ["q0", "bad1", "q2"]
    assert store.call_totals()["calls"] == 2
    again = CachedModel(Async(), store)
    assert [o[0].cached for o in again.generate(["q0", "q2"], SamplingParams(max_tokens=4))] == [True, True]
