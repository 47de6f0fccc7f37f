from fractions import Fraction as F

import pytest

from failforge.judges.answers import extract_choice, extract_final_number, parse_number
from failforge.judges.math import ExpressionError, evaluate_expression, reference_value


@pytest.mark.parametrize(
    "text, value, how",
    [
        ("She pays 5 + 7 = 12 dollars.\n#### 12", F(12), "####"),
        ("#### 1,234", F(1234), "####"),
        ("first #### 3 then corrected #### 4", F(4), "####"),
        ("So the result is \\boxed{42}.", F(42), "boxed"),
        ("\\boxed{\\frac{3}{4}}", F(3, 4), "boxed"),
        ("\\boxed{-\\dfrac{1}{2}}", F(-1, 2), "boxed"),
        ("\\boxed{\\$1{,}000}", F(1000), "boxed"),
        ("The answer is $1,234.50.", F(246900, 200), "answer is"),
        ("Final answer: -7", F(-7), "answer is"),
        ("The answer is 3/4 of the cake", F(3, 4), "answer is"),
        ("answer: −12", F(-12), "answer is"),
        ("In 2020 there were 1,000,000 people; the answer is 42 people", F(42), "answer is"),
        ("He has -5 apples", F(-5), "last number"),
        ("3-4 gives", F(4), "last number"),
        ("It costs $18 per kg", F(18), "last number"),
        ("It is 0.75 of it", F(3, 4), "last number"),
        ("about .5 liters", F(1, 2), "last number"),
        ("50% of them", F(50), "last number"),
    ],
)
def test_extract_final_number(text, value, how):
    assert extract_final_number(text) == (value, how)


@pytest.mark.parametrize("text", ["", "I don't know.", "The answer is unclear", "- . /"])
def test_no_final_number(text):
    assert extract_final_number(text) == (None, "no final answer")


def test_zero_denominator_is_not_a_fraction():
    assert extract_final_number("5/0") == (F(5), "last number")


@pytest.mark.parametrize("text, value", [("$1,200", F(1200)), ("-3/4", F(-3, 4)), ("12 apples", F(12)), ("nope", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text, letter",
    [
        ("A", "A"),
        ("(B)", "B"),
        ("B.", "B"),
        ("Answer: C", "C"),
        ("the answer is d.", "D"),
        ("The answer is (B) because it is the capital", "B"),
        ("**B**", "B"),
        ("B) Paris", "B"),
        ("C: the mitochondria", "C"),
        ("Option C is correct", "C"),
        ("I think (C) is right", "C"),
        ("I'd pick choice a", "A"),
        ("A cat is an animal", None),
        ("The answer is a bit unclear", None),
        ("I'm not sure", None),
        ("Either (A) or (B)", None),
        ("E", None),  # not one of the letters
        ("", None),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_extract_choice_custom_letters():
    assert extract_choice("E", letters="ABCDE") == "E"


@pytest.mark.parametrize(
    "text, letter",
    [
        ("the answer is A or B", None),
        ("(A) or (B)", None),
        ("A or B", None),
        ("Answer: A/B", None),
        ("Option C or D", None),
        ("The answer is A. No wait, the answer is C.", None),  # explicit cues disagree
        ("The answer is C. Yes, the answer is C.", "C"),  # ... or agree
        ("Answer: B, a big city", "B"),  # a lower-case word after a comma is no second letter
        ("B) Paris or London", "B"),
    ],
)
def test_extract_choice_hedges_are_no_answer(text, letter):
    assert extract_choice(text) == letter


@pytest.mark.parametrize(
    "expr, value",
    [
        ("3*(4+5)", F(27)),
        ("1/3 + 1/6", F(1, 2)),
        ("2**10 - 1", F(1023)),
        ("2^3", F(8)),
        ("-(-2)", F(2)),
        ("1,000 * 3", F(3000)),
        ("0.1 + 0.2", F(3, 10)),
        ("7 ÷ 2", F(7, 2)),
    ],
)
def test_evaluate_expression(expr, value):
    assert evaluate_expression(expr) == value


@pytest.mark.parametrize(
    "expr",
    ["__import__('os')", "abs(-1)", "x + 1", "2 ** 1000", "2 ** 0.5", "1/0", "(1).real", "[1, 2]", "1 if 1 else 2", "9" * 5000, "(" * 500 + "1" + ")" * 500],
)
def test_evaluate_expression_rejects(expr):
    with pytest.raises(ExpressionError):
        evaluate_expression(expr)


@pytest.mark.parametrize(
    "ref, value",
    [(72, F(72)), (0.5, F(1, 2)), ("3*(4+5)", F(27)), ("$1,200", F(1200)), ("Natalia sold 48/2 = 24 clips.\n#### 72", F(72)), (None, None), ("", None), ("unknown", None)],
)
def test_reference_value(ref, value):
    assert reference_value(ref) == value


# --- the last number, read from the end ----------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from failforge.judges.answers import _last_number, _numbers  # noqa: E402

_CHARS = "0123456789 ,./-−–$€£a+\n"


@settings(max_examples=300, deadline=None)
@given(head=st.text(_CHARS, max_size=60), filler=st.integers(0, 9000), tail=st.text(_CHARS, max_size=60))
def test_the_last_number_read_from_the_end_is_the_last_of_all(head, filler, tail):
    # long texts put numbers on both sides of the first window's edge (4096 characters)
    text = head + ("12,345.6 / 7 -8 " * (filler // 16)) + tail
    nums = _numbers(text)
    assert _last_number(text) == (nums[-1] if nums else None)
