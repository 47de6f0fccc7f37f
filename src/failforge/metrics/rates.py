"""Rates over sets of outcomes: failure rate / attack success rate, accuracy, cost.

Every rate comes with a Wilson score interval, which stays inside [0, 1] and is
sensible for small n and for rates near 0 or 1 (where the normal approximation
is not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict


class RateEstimate(BaseModel):
    """k successes out of n, with a confidence interval."""

    model_config = ConfigDict(frozen=True)

    k: int
    n: int
    #: k / n, or None when n == 0 (undefined, not zero)
    rate: float | None
    low: float
    high: float
    confidence: float = 0.95
    #: items left out of n (e.g. verdicts a judge could not score)
    excluded: int = 0


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate(k: int, n: int, confidence: float = 0.95, excluded: int = 0) -> RateEstimate:
    low, high = wilson_interval(k, n, confidence)
    return RateEstimate(
        k=k, n=n, rate=(k / n if n else None), low=low, high=high, confidence=confidence, excluded=excluded
    )


def failure_rate(flags: Iterable[bool | None], confidence: float = 0.95) -> RateEstimate:
    """Share of items that failed. ``None`` means "could not be scored" and is left out of n."""
    values = list(flags)
    scored = [f for f in values if f is not None]
    return rate(sum(bool(f) for f in scored), len(scored), confidence, excluded=len(values) - len(scored))


def attack_success_rate(flags: Iterable[bool | None], confidence: float = 0.95) -> RateEstimate:
    """ASR: share of attack prompts that made the target fail (same estimate as ``failure_rate``)."""
    return failure_rate(flags, confidence)


def accuracy(predictions: Sequence[Any], references: Sequence[Any], confidence: float = 0.95) -> RateEstimate:
    """Share of predictions equal to their reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    correct = sum(p == r for p, r in zip(predictions, references))
    return rate(correct, len(predictions), confidence)


def failures_per_1000_calls(failures: int, calls: int) -> float | None:
    """Failures found per 1,000 model calls: what a failure costs to find. None when no calls were made."""
    if failures < 0 or calls < 0:
        raise ValueError(f"counts must be >= 0, got failures={failures}, calls={calls}")
    return 1000.0 * failures / calls if calls else None
