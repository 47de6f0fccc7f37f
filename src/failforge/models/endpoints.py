"""Several OpenAI-compatible endpoints serving one model, used as one.

Each request goes to the endpoint with the fewest requests outstanding (ties: the one
that was sent the fewest), at most ``per_endpoint`` on each at once. When a request
to an endpoint fails (a 5xx, a timeout, a refused or dropped connection; not a 429,
which says "busy", not "down"), the endpoint's health is checked (``GET /models``,
one attempt): an endpoint that fails it is ejected, and the requests go to the others.
An ejected endpoint is checked again after ``eject_s`` seconds, then after twice as
long each time it fails, up to ``eject_cap_s``, and comes back when it passes and
still serves the model the run's fingerprint names. When every endpoint is out,
requests go to them anyway, and their own retries decide (as with one endpoint).

httpx balances connections to one host only, and no maintained Python library does
least-outstanding balancing with health checks for an asyncio client, so it is
written here (about a hundred lines). It runs on the openai backend's private loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: ``expected`` before the fingerprint has been taken: any served model is accepted
UNSET = object()
#: what ``health`` returns for an endpoint that is alive but could not say what it serves (a 429)
ALIVE = object()


@dataclass(eq=False)
class Endpoint:
    url: str
    #: requests on the wire now
    outstanding: int = 0
    #: requests ever sent (ties go to the least used)
    sent: int = 0
    #: failed its health check; out until a later check passes
    ejected: bool = False
    #: serves another model than the fingerprint's: out for good
    retired: bool = False
    #: seconds until the next check of an ejected endpoint
    backoff_s: float = 0.0
    #: its health is being checked after a failed request
    checking: bool = False


class Balancer:
    def __init__(
        self,
        endpoints: list[Endpoint],
        per_endpoint: int,
        health: Callable[[Endpoint], Awaitable[object]],
        *,
        eject_s: float = 10.0,
        eject_cap_s: float = 120.0,
        on_event: Callable[[str, Endpoint, str], None] | None = None,
    ):
        self.endpoints = endpoints
        self.cap = per_endpoint
        self._health = health  # raises when the endpoint is down; else what it serves (or ALIVE)
        self.eject_s = eject_s
        self.eject_cap_s = eject_cap_s
        self._on_event = on_event or (lambda kind, ep, why: None)
        #: the served model every endpoint must report (set when the fingerprint is taken)
        self.expected: object = UNSET
        self._cond: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task] = set()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:  # made on the loop that uses it
            self._cond = asyncio.Condition()
        return self._cond

    def _pick(self) -> Endpoint | None:
        # an endpoint whose health is being checked gets nothing new meanwhile
        usable = [e for e in self.endpoints if not e.ejected and not e.retired and not e.checking]
        if not usable:
            # every endpoint is out: send anyway, and let the request's retries decide
            usable = [e for e in self.endpoints if not e.retired] or self.endpoints
        free = [e for e in usable if e.outstanding < self.cap]
        return min(free, key=lambda e: (e.outstanding, e.sent)) if free else None

    async def acquire(self) -> Endpoint:
        """Wait for a free slot on the endpoint with the fewest requests outstanding."""
        cond = self._condition()
        async with cond:
            while (ep := self._pick()) is None:
                await cond.wait()
            ep.outstanding += 1
            ep.sent += 1
            return ep

    async def release(self, ep: Endpoint) -> None:
        cond = self._condition()
        async with cond:
            ep.outstanding -= 1
            cond.notify(1)

    async def _wake_all(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def failed(self, ep: Endpoint, busy: bool) -> None:
        """A request to ``ep`` failed: check its health, and eject it if it is down.
        ``busy`` (a 429) is no sign of a dead endpoint."""
        if len(self.endpoints) < 2 or busy or ep.ejected or ep.retired or ep.checking:
            return
        ep.checking = True
        try:
            served = await self._health(ep)
        except Exception as e:  # down: whatever the check met is the reason
            self.eject(ep, _describe(e))
            return
        finally:
            ep.checking = False
        if self._compare(ep, served):
            await self._wake_all()  # requests that waited for its slots may go

    def _compare(self, ep: Endpoint, served: object) -> bool:
        if served is ALIVE or self.expected is UNSET or served == self.expected:
            return True
        ep.retired = True
        self._on_event("retired", ep, f"serves {served}, not {self.expected}")
        return False

    def eject(self, ep: Endpoint, why: str) -> None:
        """Take ``ep`` out and check it again later."""
        if ep.ejected or ep.retired:
            return
        ep.ejected = True
        ep.backoff_s = self.eject_s
        self._on_event("ejected", ep, why)
        task = asyncio.get_running_loop().create_task(self._recheck(ep))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recheck(self, ep: Endpoint) -> None:
        while ep.ejected and not ep.retired:
            await asyncio.sleep(ep.backoff_s)
            try:
                served = await self._health(ep)
            except Exception:
                ep.backoff_s = min(ep.backoff_s * 2, self.eject_cap_s)
                continue
            if self._compare(ep, served):
                ep.ejected = False
                ep.backoff_s = 0.0
                self._on_event("back", ep, "passed its health check")
                await self._wake_all()

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
