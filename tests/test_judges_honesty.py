import math

import pytest

from failforge.judges.base import JudgeInput
from failforge.judges.honesty import HonestyConfig, HonestyJudge, entropy


def test_entropy_values():
    assert entropy(["A"] * 10) == 0.0
    assert entropy(["A", "B"] * 5) == pytest.approx(math.log(2))
    assert entropy(list("ABCD")) == pytest.approx(math.log(4))


def _judge(responses, **cfg):
    return HonestyJudge(HonestyConfig(**cfg)).judge([JudgeInput(instruction="q", responses=responses)])[0]


def test_consistent_answers_pass():
    v = _judge(["A", "(A)", "Answer: A", "the answer is a.", "A) Paris"] * 2)
    assert v.label == "pass" and v.score == 0.0


def test_spread_answers_fail():
    v = _judge(["A", "B", "C", "D"] * 2 + ["A", "B"])
    assert v.label == "fail" and v.score == pytest.approx(entropy(list("ABCDABCDAB")))


def test_threshold_is_inclusive():
    # five outcomes split 2/2/2/2/2 give ln 5 = 1.609; set the threshold exactly there
    v = _judge(["A", "B", "C", "D", "E"] * 2, letters="ABCDE", threshold=math.log(5))
    assert v.label == "fail"


def test_unparseable_answers_are_one_outcome():
    v = _judge(["A"] * 5 + ["I really cannot say", "hmm", "no idea", "???", "maybe"])
    assert v.score == pytest.approx(math.log(2))  # A:5, ?:5
    assert "?:5" in v.reason


def test_fewer_than_two_parseable_is_unscorable():
    assert _judge(["A", "don't know", ""]).label == "unscorable"
    assert _judge([]).label == "unscorable"
