"""A ChatModel that goes through the run store: the cache and the resume mechanism.

Every request is looked up by its key first; only missing ones reach the backend,
in chunks, and each chunk is committed as soon as it returns, so a killed run
loses at most the chunk in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine

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
    ):
        self.inner = inner
        self.store = store
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
        for i in range(0, len(missing), self.chunk_size):
            chunk = missing[i : i + self.chunk_size]
            outs = self.inner.complete([r for _, r in chunk])
            self._commit(chunk, outs, found)
        return self._assemble(requests, keys, found)

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        keys, found, missing = self._split(requests)
        self._tick(len(requests) - len(missing))
        chunks = [missing[i : i + self.chunk_size] for i in range(0, len(missing), self.chunk_size)]

        async def one(chunk):
            outs = await self.inner.acomplete([r for _, r in chunk])
            self._commit(chunk, outs, found)

        await asyncio.gather(*(one(c) for c in chunks))
        return self._assemble(requests, keys, found)

    def _commit(self, chunk, outs: list[Completion], found: dict[str, Completion]) -> None:
        if len(outs) != len(chunk):
            raise RuntimeError(f"backend {self.backend} returned {len(outs)} completions for {len(chunk)} requests")
        self.store.put_calls(self.fingerprint, self.name, [(k, r, c) for (k, r), c in zip(chunk, outs)])
        for (k, _), c in zip(chunk, outs):
            found[k] = c
        self.sent += len(chunk)
        self._tick(len(chunk))

    def close(self) -> None:
        self.inner.close()


def _run_sync(coro: Coroutine):
    """Run a coroutine to completion from sync code, also when a loop is running (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
