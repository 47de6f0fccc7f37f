"""The reviewer of a rewrite: the elimination rules first, then the equality judge.

Reward (TeaMs-RL): 1 when the reviewer says the rewrite is "Not Equal" to the
instruction it rewrote, 0 when it says "Equal", 0 when an elimination rule fires
(the reviewer model is then not asked), and 0 when the reviewer's answer cannot be
parsed (``unscorable``: no reward, counted apart).
"""

from __future__ import annotations

from dataclasses import dataclass

from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.judges.elimination import EliminationJudge

#: outcome of one review
ELIMINATED, NOT_EQUAL, EQUAL, UNSCORABLE = "eliminated", "not-equal", "equal", "unscorable"


@dataclass(frozen=True)
class Review:
    outcome: str
    reward: float
    reason: str


class Reviewer:
    def __init__(self, equality: Judge, elimination: EliminationJudge):
        self.equality = equality
        self.elimination = elimination

    def review(self, pairs: list[tuple[str, str]]) -> list[Review]:
        """One review per (instruction, rewrite), the reviewer asked in one batch."""
        rules = self.elimination.judge([JudgeInput(instruction=a, responses=[b]) for a, b in pairs])
        ask = [k for k, v in enumerate(rules) if v.label != "fail"]
        verdicts = self.equality.judge([JudgeInput(instruction=pairs[k][0], responses=[pairs[k][1]]) for k in ask]) if ask else []
        by_k = dict(zip(ask, verdicts))
        return [_from_verdict(by_k[k]) if k in by_k else Review(ELIMINATED, 0.0, v.reason) for k, v in enumerate(rules)]


def _from_verdict(v: Verdict) -> Review:
    if v.label == "pass":
        return Review(NOT_EQUAL, 1.0, v.reason)
    if v.label == "fail":
        return Review(EQUAL, 0.0, v.reason)
    return Review(UNSCORABLE, 0.0, v.reason)
