"""Requests and tokens per minute for a server backend: a sliding 60-second window.

Each HTTP attempt takes a slot in the window before it is sent, with an estimate of
the tokens it will use (the prompt's characters / 4 + ``max_tokens``); when the answer
comes back the estimate is replaced by what the server counted (0 for a failed
attempt). An attempt waits while the window is full. One attempt larger than the
whole token limit still goes, alone in the window, rather than never.

The limiter lives on the backend's private event loop, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_S = 60.0


class Slot:
    """One attempt's place in the window: when it was sent and the tokens counted for it."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int):
        self.at = at
        self.tokens = tokens


class MinuteLimiter:
    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._sleep = sleep
        self._window: deque[Slot] = deque()
        #: seconds spent waiting for the window, in total
        self.waited_s = 0.0

    @property
    def active(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def _drop_old(self, now: float) -> None:
        while self._window and self._window[0].at <= now - WINDOW_S:
            self._window.popleft()

    def _fits(self, tokens: int) -> bool:
        if self.requests_per_minute is not None and len(self._window) >= self.requests_per_minute:
            return False
        if self.tokens_per_minute is not None and self._window:
            if sum(s.tokens for s in self._window) + tokens > self.tokens_per_minute:
                return False
        return True

    async def acquire(self, tokens: int) -> Slot:
        """Wait until an attempt estimated at ``tokens`` fits in the window; take its slot."""
        while True:
            now = self._clock()
            self._drop_old(now)
            if not self.active or self._fits(tokens):
                slot = Slot(now, tokens)
                if self.active:
                    self._window.append(slot)
                return slot
            wait = max(self._window[0].at + WINDOW_S - now, 0.01)
            self.waited_s += wait
            await self._sleep(wait)

    @staticmethod
    def settle(slot: Slot, tokens: int) -> None:
        """Replace the estimate with the tokens the attempt really used."""
        slot.tokens = tokens


def estimate_tokens(chars: int, max_tokens: int) -> int:
    return chars // 4 + max_tokens
