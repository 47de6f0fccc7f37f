import pytest

from failforge.judges.arithmetic import format_exact, read_question
from failforge.judges.base import JudgeInput
from failforge.judges.math import MathConfig, MathJudge
from failforge.models.base import ChatModel, Completion


def _item(resp, ref=None, q="q", **meta):
    return JudgeInput(instruction=q, responses=[resp], reference=ref, meta=meta)


@pytest.mark.parametrize(
    "q, value",
    [
        ("What is 7 + 5?", 12),
        ("Calculate 60 + 38 * 10.", 440),
        ("What is (94 + 21) * 8?", 920),
        ("Work out 95 * 52 + 7 * 18.", 5066),
        ("Find the value of 95 * (11 + 3).", 1330),
        ("What is 6 times 7?", 42),
        ("How much is 1,200 - 1?", 1199),
        ("6 * 7 = ?", 42),
        ("What is 27 - 41 + 5?", -9),
    ],
)
def test_questions_read_whole(q, value):
    assert read_question(q).value == value


@pytest.mark.parametrize(
    "q",
    [
        "What is 5 more than 3 * 4?",  # the longest substring would give 12
        "What is 3/4 of 12?",  # ... and 0.75
        "The answer to Question 1 would be 360 / 9 = 42.",
        "What is 12?",  # no operation
        "What is 5 / 0?",
        "How many apples are there?",
        "Solve for x: 2 * x = 4",
    ],
)
def test_other_text_is_not_an_arithmetic_question(q):
    assert read_question(q) is None


@pytest.mark.parametrize(
    "q, resp, label",
    [
        # the misreadings, as the target wrote them
        ("What is 11 + 11?", "11 + 11 = 22, which is the sum of 11 and 11.", "pass"),
        ("What is 7 * 7?", "To calculate 7 * 7, we need to multiply 7 by itself, which is 7. In other words, "
         "7 * 7 is equivalent to 49 being multiplied by 1.", "fail"),
        ("What is 15 / 10?", "15 / 10 = 1.5\n\nThen multiplying by 1.05 converts it.", "pass"),
        # exactness: no tolerance on integers
        ("What is 1000000 + 1?", "1000000", "fail"),
        ("What is 999999 + 2?", "The answer is 1,000,001.", "pass"),
        # markers, words, chains
        ("What is 3 * 4 + 5?", "3 * 4 + 5 = 12 + 5 = 17.", "pass"),
        ("What is 7 + 5?", "twelve", "pass"),
        ("What is 7 + 5?", "#### 12", "pass"),
        ("What is 7 + 5?", "So we get \\boxed{12}.", "pass"),
        ("What is 2 + 3?", "2 + 3 * 4 = 14", "fail"),  # a longer expression is not this one
        ("What is 2 * 3?", "You multiply the number by itself, which is 6.", "pass"),
        # decimals: a non-terminating value at the precision the question implies
        ("What is 10 / 3?", "10 / 3 = 3.33", "pass"),
        ("What is 10 / 3?", "The answer is 3.3", "fail"),
        ("What is 10 / 3?", "10/3 = 3.34", "fail"),
        ("What is 2 / 3?", "The answer is 2/3.", "pass"),
        ("What is 0.5 + 0.25?", "The answer is 0.75.", "pass"),
        ("What is 0.5 + 0.25?", "The answer is 0.8.", "fail"),
        # no answer is a failure
        ("What is 3 * 5?", "To calculate 3 * 5, you simply multiply 3 by 5.", "fail"),
        # two different answers are never a pass
        ("What is 7 + 5?", "The answer is 12. Or maybe the answer is 13.", "unscorable"),
        ("What is 1 * 4?", "1 * 4 = 4. In other words, 1 * 4 equals 1.", "unscorable"),
    ],
)
def test_answers_to_the_question(q, resp, label):
    assert MathJudge().judge([_item(resp, q=q)])[0].label == label


@pytest.mark.parametrize(
    "resp, ref, label",
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", 7, "pass"),
        ("#### 7", "3+4", "pass"),
        ("The answer is \\boxed{0.75}", "3/4", "pass"),
        ("#### 8", 7, "fail"),
        ("#### 0.33", "1/3", "pass"),
        ("#### 0.3", "1/3", "fail"),
        ("I am not sure how to do this.", 7, "fail"),  # no answer: a failure by default
        ("So it costs $1,200.", "1200", "fail"),  # word problems: no marked answer, no last-number guess
    ],
)
def test_word_problems_read_marked_answers(resp, ref, label):
    assert MathJudge().judge([_item(resp, ref)])[0].label == label


def test_last_number_fallback_is_opt_in():
    v = MathJudge(MathConfig(last_number_fallback=True)).judge([_item("So it costs $1,200.", "1200")])[0]
    assert v.label == "pass"


def test_policy_no_answer_unscorable():
    v = MathJudge(MathConfig(no_answer="unscorable")).judge([_item("no idea", 5)])[0]
    assert v.label == "unscorable" and "no answer" in v.reason


@pytest.mark.parametrize("item", [_item("", 5), _item("#### 5", 5, error="HTTP 500"), _item("#### 5", None), _item("#### 5", "banana")])
def test_unscorable(item):
    assert MathJudge().judge([item])[0].label == "unscorable"


def test_exact_references_read_back_exactly():
    assert [format_exact(read_question(q).value) for q in ("What is 1 / 3?", "What is 1.5 * 2.25?", "What is 2 - 9?")] == [
        "1/3", "3.375", "-7"
    ]


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
