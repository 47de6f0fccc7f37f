"""The requests- and tokens-per-minute window of the openai backend, on a fake clock."""

from __future__ import annotations

import asyncio

from failforge.models.ratelimit import MinuteLimiter, estimate_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_requests_per_minute_waits_for_the_oldest_to_leave_the_window():
    clock = Clock()
    lim = MinuteLimiter(requests_per_minute=2, clock=clock, sleep=clock.sleep)

    async def go():
        return [(await lim.acquire(10)).at for _ in range(5)]

    times = asyncio.run(go())
    assert [t - 1000.0 for t in times] == [0.0, 0.0, 60.0, 60.0, 120.0]
    assert lim.waited_s == 120.0


def test_tokens_per_minute_counts_what_the_server_reported():
    clock = Clock()
    lim = MinuteLimiter(tokens_per_minute=100, clock=clock, sleep=clock.sleep)

    async def go():
        a = await lim.acquire(80)
        lim.settle(a, 30)  # the estimate was high: 30 tokens really
        b = await lim.acquire(60)  # 30 + 60 <= 100: no wait
        c = await lim.acquire(60)  # 90 + 60 > 100: waits until a and b leave the window
        return a, b, c

    a, b, c = asyncio.run(go())
    assert b.at == a.at and c.at == a.at + 60.0
    big = asyncio.run(lim.acquire(500))  # larger than the limit: goes alone in the window
    assert big.tokens == 500


def test_no_limits_never_waits_and_keeps_no_window():
    clock = Clock()
    lim = MinuteLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        asyncio.run(lim.acquire(10**6))
    assert clock.slept == [] and not lim.active


def test_estimate_is_prompt_characters_over_four_plus_max_tokens():
    assert estimate_tokens(400, 64) == 164
