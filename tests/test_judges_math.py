import pytest

from failforge.judges.base import JudgeInput
from failforge.judges.math import MathConfig, MathJudge
from failforge.models.base import ChatModel, Completion


def _item(resp, ref, **meta):
    return JudgeInput(instruction="q", responses=[resp], reference=ref, meta=meta)


@pytest.mark.parametrize(
    "resp, ref, label",
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", 7, "pass"),
        ("#### 7", "3+4", "pass"),
        ("The answer is \\boxed{0.75}", "3/4", "pass"),
        ("So it costs $1,200.", "1200", "pass"),
        ("#### 8", 7, "fail"),
        ("#### 0.33", "1/3", "fail"),  # outside the default tolerance
        ("#### 0.3333333", "1/3", "pass"),  # inside it (relative 1e-6)
        ("The temperature drops to -4 degrees.", -4, "pass"),
        ("I am not sure how to do this.", 7, "fail"),  # no final number: a failure by default
    ],
)
def test_math_verdicts(resp, ref, label):
    assert MathJudge().judge([_item(resp, ref)])[0].label == label


def test_tolerance_and_reasons():
    j = MathJudge(MathConfig(rel_tol=1e-3))
    v = j.judge([_item("#### 0.3333", "1/3")])[0]
    assert v.label == "pass" and v.score == 0.0 and "(####)" in v.reason
    v = MathJudge().judge([_item("I don't know", 5)])[0]
    assert (v.label, v.score, v.reason) == ("fail", 1.0, "no final answer")


def test_policy_no_answer_unscorable():
    v = MathJudge(MathConfig(no_answer="unscorable")).judge([_item("no idea", 5)])[0]
    assert v.label == "unscorable" and "no final answer" in v.reason


@pytest.mark.parametrize("item", [_item("", 5), _item("#### 5", 5, error="HTTP 500"), _item("#### 5", None), _item("#### 5", "banana")])
def test_unscorable(item):
    assert MathJudge().judge([item])[0].label == "unscorable"


class _Solver(ChatModel):
    backend = "fake"

    @property
    def fingerprint(self):
        return "solver"

    def _complete(self, requests):
        self.seen = [r.messages[-1].content for r in requests]
        return [Completion(text="Let me compute. #### 12") for _ in requests]


def test_solver_supplies_missing_references():
    solver = _Solver()
    vs = MathJudge(solver=solver).judge([_item("#### 12", None), _item("#### 11", None), _item("#### 3", 3)])
    assert [v.label for v in vs] == ["pass", "fail", "pass"]
    assert len(solver.seen) == 2  # only items without a reference are asked
