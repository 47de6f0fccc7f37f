"""A ChatModel that goes through the run store: the cache and the resume mechanism.

Every request is looked up by its key first; only missing ones reach the backend,
all of them at once, and each answer is committed to the store as soon as it is back.
There is no barrier between groups of requests:

- A backend that decodes many requests together (llama.cpp) is given the whole list
  and hands out each answer at the step that finishes it (``ChatModel.stream``); a
  freed slot takes the next request at once, so its batch stays full until the work
  runs out. A backend that does not stream is handed ``chunk_size`` requests at a time.
- A natively async backend (one that overrides ``_acomplete``: a server client, a
  pool of replicas) is kept full by a window of ``max_in_flight`` requests, one
  request per call, a new one sent as each returns.

Answers are committed on a thread of their own (group commit): an answer that comes
back alone is committed alone, at once; the answers that come back while one commit
flushes to disk go together into the next. The backend never waits for the disk,
and a fast one pays one flush per many answers. A killed run loses only the requests
in flight and the answers of the last few milliseconds, not yet flushed. When a request
fails, no new one is sent; the others in flight still finish and are committed before
the error is raised.

Two more things pass through here: what the backend counted on the way (HTTP
attempts, retries, faults: ``take_events``), written with each commit in the same
transaction; and the run's token budget, checked before each request is sent (by the
backend, holding its slot or before it joins the batch, where it has a ``gate``;
before each request or chunk otherwise).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

from failforge.errors import BudgetReached
from failforge.models.base import ChatModel, Completion, Request, run_sync
from failforge.run.store import RunStore

#: called with the number of requests just finished
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
        max_in_flight: int | None = None,
    ):
        self.inner = inner
        self.store = store
        #: the name its backend counts go under in the store (the run's role for it)
        self.label = label or f"{inner.backend}:{inner.name}"
        #: stop before sending a request once the store's calls hold this many tokens
        self.token_budget = token_budget
        # a backend with a gate checks the budget itself, request by request
        self._gated = token_budget is not None and hasattr(inner, "gate")
        if self._gated:
            inner.gate = self.check_budget
        self.backend = inner.backend
        self.name = inner.name
        #: requests handed over at a time to a backend that does not stream
        self.chunk_size = chunk_size or getattr(inner, "preferred_chunk", 16)
        #: natively async backends: requests kept in flight at once
        self.max_in_flight = max(1, max_in_flight or getattr(inner, "max_in_flight", 16))
        self._native_async = type(inner)._acomplete is not ChatModel._acomplete
        self.progress = progress
        self._committer = _Committer(self._write)
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
        out = []
        for k, r in zip(keys, requests):
            c = found[k]
            # a key may serve several requests only if they are the same sample, so the
            # index almost always matches already: copy only when it does not
            out.append(c if c.sample_index == r.sample_index else c.model_copy(update={"sample_index": r.sample_index}))
        self.usage["calls"] += len(out)
        self.usage["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        self.usage["completion_tokens"] += sum(c.completion_tokens for c in out)
        return out

    def check_budget(self) -> None:
        if self.token_budget is None:
            return
        # answers on their way to the disk count too: the budget never lags the commits
        spent = self.store.tokens_spent() + self._committer.pending_tokens
        if spent >= self.token_budget:
            raise BudgetReached(
                f"token budget of {self.token_budget:,} reached ({spent:,} tokens spent); "
                "`failforge resume RUN_DIR --token-budget N` with a larger N continues"
            )

    def _take_events(self) -> dict[str, int]:
        take = getattr(self.inner, "take_events", None)
        return take() if take is not None else {}

    def _flush_events(self) -> None:
        events = self._take_events()
        if events:
            self.store.add_events(self.label, events)

    def _tick(self, n: int) -> None:
        if self.progress and n:
            self.progress(n)

    # --- a backend that streams (or is handed chunks) --------------------------------
    def _complete(self, requests: list[Request]) -> list[Completion]:
        if self._native_async:
            # a server client or replica pool overlaps requests on the async path only
            return run_sync(self._acomplete(requests))
        keys, found, missing = self._split(requests)
        self._tick(len(requests) - len(missing))
        if missing:
            self._stream(missing, found)
        return self._assemble(requests, keys, found)

    def _stream(self, missing: list[tuple[str, Request]], found: dict[str, Completion]) -> None:
        answered = 0
        groups = self.inner.stream([r for _, r in missing], self.chunk_size)
        try:
            while True:
                if not self._gated:
                    self.check_budget()  # before the next chunk is computed
                group = next(groups, None)
                if group is None:
                    break
                if any(not 0 <= i < len(missing) for i, _ in group):
                    raise RuntimeError(f"backend {self.backend} answered a request it was not asked")
                self._committer.put([(missing[i], c) for i, c in group], found)
                answered += len(group)
        finally:
            close = getattr(groups, "close", None)
            if close is not None:
                close()  # a generator left early releases the backend (its lock) here
            self._committer.wait()
            self._flush_events()
        if answered != len(missing):
            raise RuntimeError(f"backend {self.backend} returned {answered} completions for {len(missing)} requests")

    # --- a natively async backend: a window of requests in flight ----------------------
    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        if not self._native_async:
            return await asyncio.to_thread(self._complete, requests)
        keys, found, missing = self._split(requests)
        self._tick(len(requests) - len(missing))
        if missing:
            await self._window(missing, found)
        return self._assemble(requests, keys, found)

    async def _window(self, missing: list[tuple[str, Request]], found: dict[str, Completion]) -> None:
        todo = iter(missing)
        running: dict[asyncio.Future, tuple[str, Request]] = {}
        errors: list[BaseException] = []

        def refill() -> None:
            while len(running) < self.max_in_flight and not errors:
                item = next(todo, None)
                if item is None:
                    return
                if not self._gated:
                    try:
                        self.check_budget()
                    except BudgetReached as e:
                        errors.append(e)
                        return
                running[asyncio.ensure_future(self.inner.acomplete([item[1]]))] = item

        try:
            refill()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                group: list[tuple[tuple[str, Request], Completion]] = []
                for task in done:
                    item = running.pop(task)
                    if task.cancelled():
                        errors.append(asyncio.CancelledError())
                    elif task.exception() is not None:
                        errors.append(task.exception())
                    else:
                        outs = task.result()
                        if len(outs) != 1:
                            errors.append(RuntimeError(f"backend {self.backend} returned {len(outs)} completions for 1 request"))
                        else:
                            group.append((item, outs[0]))
                if group:
                    self._committer.put(group, found)
                refill()  # after an error: no new request; the ones in flight finish
        finally:
            for task in running:  # only when this coroutine itself is cancelled
                task.cancel()
            await asyncio.to_thread(self._committer.wait)
            self._flush_events()
        if errors:
            # a budget stop only when nothing worse happened
            raise next((e for e in errors if not isinstance(e, BudgetReached)), errors[0])

    def _write(self, items: list[tuple[tuple[str, Request], Completion]]) -> None:
        """One transaction (on the committer's thread): the answers, and the backend's counts."""
        self.store.put_calls(
            self.fingerprint,
            self.name,
            [(k, r, c) for (k, r), c in items],
            events=(self.label, self._take_events()),
        )
        self.sent += len(items)
        self._tick(len(items))

    def close(self) -> None:
        try:
            self._committer.stop()
            self._flush_events()
        except Exception:  # closing must never mask the caller's own error (the store may be closed)
            pass
        self.inner.close()


class _Committer:
    """Writes answers to the store on a thread of its own, everything queued in one
    transaction: while one commit flushes to disk, the answers arriving meanwhile
    queue for the next (a classic group commit). SQLite has no such mode itself, and
    the standard library's executors run one job per call, so it is written here.

    ``put`` returns at once; ``wait`` returns when everything put so far is committed
    and raises the first error a commit met.
    """

    def __init__(self, write: Callable[[list], None]):
        self._write = write
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Condition()
        self._pending = 0  # groups put and not yet committed (or failed)
        #: prompt + completion tokens of the answers put and not yet committed
        self.pending_tokens = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, group: list[tuple[tuple[str, Request], Completion]], found: dict[str, Completion]) -> None:
        if self._error is not None:
            raise self._error
        with self._done:
            self._pending += 1
            self.pending_tokens += _tokens(group)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="failforge-commit", daemon=True)
                self._thread.start()
        self._queue.put((group, found))

    def wait(self) -> None:
        with self._done:
            while self._pending:
                self._done.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            groups = [first]
            stop = False
            while True:  # everything queued meanwhile joins this commit
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                groups.append(more)
            try:
                self._write([item for group, _ in groups for item in group])
                for group, found in groups:
                    for (k, _), c in group:
                        found[k] = c
            except BaseException as e:  # raised by wait() in the caller's thread
                if self._error is None:
                    self._error = e
            with self._done:
                self._pending -= len(groups)
                self.pending_tokens -= sum(_tokens(group) for group, _ in groups)
                self._done.notify_all()
            if stop:
                return


def _tokens(group: list[tuple[tuple[str, Request], Completion]]) -> int:
    return sum(c.prompt_tokens + c.completion_tokens for _, c in group)
