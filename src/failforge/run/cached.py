"""A ChatModel that goes through the run store: the cache and the resume mechanism.

Every request is looked up by its key first; only missing ones reach the backend,
in chunks, and each chunk is committed as soon as it returns, so a killed run
loses at most the chunk in flight. When one chunk fails, the others in flight still
finish and are committed before the error is raised.

Two more things pass through here: what the backend counted on the way (HTTP
attempts, retries, faults: ``take_events``), added to the store with each commit;
and the run's token budget, checked before each request is sent (by the backend,
holding its slot, where it has a ``gate``; before each chunk otherwise).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine

from failforge.errors import BudgetReached
from failforge.models.base import ChatModel, Completion, Request
from failforge.run.store import RunStore

#: called with (number of requests just finished, number still to go)
ProgressFn = Callable[[int], None]


class CachedModel(ChatModel):
    def __init__(
        self,
        inner: ChatModel,
        store: RunStore,
        chunk_size: int | None = None,
        progress: ProgressFn | None = None,
        label: str | None = None,
        token_budget: int | None = None,
    ):
        self.inner = inner
        self.store = store
        #: the name its backend counts go under in the store (the run's role for it)
        self.label = label or f"{inner.backend}:{inner.name}"
        #: stop before sending a request once the store's calls hold this many tokens
        self.token_budget = token_budget
        if token_budget is not None and hasattr(inner, "gate"):
            inner.gate = self.check_budget
        self.backend = inner.backend
        self.name = inner.name
        # Commit after every chunk. Backends that batch want chunks of their batch size;
        # async servers want enough in flight to fill their slots.
        self.chunk_size = chunk_size or getattr(inner, "preferred_chunk", 16)
        self.progress = progress
        self.sent = 0  # requests that reached the backend in this process (not cached)
        # Everything this model returned, cached or not: what the work cost when first
        # done, so metrics read the same on a resumed run.
        self.usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def _split(self, requests: list[Request]) -> tuple[list[str], dict[str, Completion], list[tuple[str, Request]]]:
        fp = self.fingerprint
        keys = [r.key(fp) for r in requests]
        found = self.store.get_calls(keys)
        missing: dict[str, Request] = {}
        for k, r in zip(keys, requests):
            if k not in found and k not in missing:
                missing[k] = r
        return keys, found, list(missing.items())

    def _assemble(self, requests, keys, found) -> list[Completion]:
        out = [found[k].model_copy(update={"sample_index": r.sample_index}) for k, r in zip(keys, requests)]
        self.usage["calls"] += len(out)
        self.usage["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        self.usage["completion_tokens"] += sum(c.completion_tokens for c in out)
        return out

    def check_budget(self) -> None:
        if self.token_budget is None:
            return
        spent = self.store.tokens_spent()
        if spent >= self.token_budget:
            raise BudgetReached(
                f"token budget of {self.token_budget:,} reached ({spent:,} tokens spent); "
                "`failforge resume RUN_DIR --token-budget N` with a larger N continues"
            )

    def _flush_events(self) -> None:
        take = getattr(self.inner, "take_events", None)
        if take is not None:
            self.store.add_events(self.label, take())

    def _tick(self, n: int) -> None:
        if self.progress and n:
            self.progress(n)

    def _complete(self, requests: list[Request]) -> list[Completion]:
        if type(self.inner)._acomplete is not ChatModel._acomplete:
            # A natively async backend (a server client) only overlaps requests on the
            # async path; chunk by chunk here would send them one at a time.
            return _run_sync(self._acomplete(requests))
        keys, found, missing = self._split(requests)
        self._tick(len(requests) - len(missing))
        try:
            for i in range(0, len(missing), self.chunk_size):
                chunk = missing[i : i + self.chunk_size]
                self.check_budget()
                outs = self.inner.complete([r for _, r in chunk])
                self._commit(chunk, outs, found)
        finally:
            self._flush_events()
        return self._assemble(requests, keys, found)

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        keys, found, missing = self._split(requests)
        self._tick(len(requests) - len(missing))
        chunks = [missing[i : i + self.chunk_size] for i in range(0, len(missing), self.chunk_size)]

        gated = getattr(self.inner, "gate", None) is not None

        async def one(chunk):
            if not gated:
                self.check_budget()
            outs = await self.inner.acomplete([r for _, r in chunk])
            self._commit(chunk, outs, found)

        # every chunk runs to its end, so answers already on their way are kept
        results = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
        self._flush_events()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # a budget stop only when nothing worse happened
            raise next((e for e in errors if not isinstance(e, BudgetReached)), errors[0])
        return self._assemble(requests, keys, found)

    def _commit(self, chunk, outs: list[Completion], found: dict[str, Completion]) -> None:
        if len(outs) != len(chunk):
            raise RuntimeError(f"backend {self.backend} returned {len(outs)} completions for {len(chunk)} requests")
        self.store.put_calls(self.fingerprint, self.name, [(k, r, c) for (k, r), c in zip(chunk, outs)])
        for (k, _), c in zip(chunk, outs):
            found[k] = c
        self.sent += len(chunk)
        self._flush_events()
        self._tick(len(chunk))

    def close(self) -> None:
        try:
            self._flush_events()
        except Exception:  # closing must never mask the caller's own error (the store may be closed)
            pass
        self.inner.close()


def _run_sync(coro: Coroutine):
    """Run a coroutine to completion from sync code, also when a loop is running (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
