"""Arithmetic questions, read whole: "What is 7 + 5?" and a few equivalent phrasings.

A question is valid only when all of it is one phrasing around one arithmetic
expression: ``What is E?``, ``Calculate E.``, ``How much is E?``, ``E = ?`` and so on.
Anything else ("What is 5 more than 3 * 4?", "What is 3/4 of 12?", "The answer to
Question 1 would be 360 / 9 = 42.") is not an arithmetic question, so it has no
reference. The expression grammar is numbers, ``+ - * /`` (and ``× ÷ x − ·``, the
words plus / minus / times / multiplied by / divided by), powers (``^``) and
parentheses; its value is computed exactly as a ``Fraction`` by walking Python's
own parse tree (``judges.math.evaluate_expression``), never ``eval``.

Hand-written because the pieces are tiny and must be exact: a general parser
library would still need these token and phrasing rules, and a computer-algebra
system would accept far more than arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# One token of an arithmetic expression. Word operators come first so "times" is not
# read as a stray "t". Numbers may use thousands separators ("1,200") and decimals.
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<op>multiplied\s+by|divided\s+by|plus|minus|times|\*\*|[-+*/^×÷xX·−–])"
    r"|(?P<paren>[()])"
    r")",
    re.IGNORECASE,
)
_OP_SYMBOL = {
    "+": "+", "plus": "+",
    "-": "-", "−": "-", "–": "-", "minus": "-",
    "*": "*", "×": "*", "x": "*", "·": "*", "times": "*", "multiplied by": "*",
    "/": "/", "÷": "/", "divided by": "/",
    "^": "^", "**": "^",
}

# The phrasings a question may have around its expression. ``E`` is the expression.
_PHRASINGS = [
    r"(?:what\s+is|what's|whats|how\s+much\s+is)(?:\s+the\s+(?:value|result|answer)\s+(?:of|to))?\s+(?P<e>.+?)(?:\s+equal\s+to)?\s*[?.]?",
    r"(?:calculate|compute|evaluate|work\s+out|find|solve|determine|simplify)(?:\s+the\s+(?:value|result)\s+of)?:?\s+(?P<e>.+?)\s*[.?!]?",
    r"what\s+does\s+(?P<e>.+?)\s+equal\s*\??",
    r"(?P<e>.+?)\s*=\s*\??",
]
_QUESTION = [re.compile(rf"^\s*{p}\s*$", re.IGNORECASE | re.DOTALL) for p in _PHRASINGS]

#: references larger than this are not arithmetic a model is asked to do in one line
MAX_ABS_VALUE = 10**9
MAX_DENOMINATOR = 1000


class NotArithmetic(ValueError):
    """The text is not one arithmetic expression."""


@dataclass(frozen=True)
class Expression:
    """An arithmetic expression as tokens in canonical form ("3 * (4 + 5)")."""

    tokens: tuple[str, ...]

    @property
    def text(self) -> str:
        out = " ".join(self.tokens)
        return out.replace("( ", "(").replace(" )", ")")

    @property
    def numbers(self) -> list[str]:
        return [t for t in self.tokens if t[0].isdigit() or t[0] == "."]

    @property
    def operators(self) -> int:
        return sum(1 for t in self.tokens if t in "+-*/^")

    def value(self) -> Fraction:
        from failforge.judges.math import ExpressionError, evaluate_expression

        try:
            return evaluate_expression(self.text)
        except ExpressionError as e:
            raise NotArithmetic(str(e)) from None


def tokenize(text: str) -> Expression:
    """The expression ``text`` is, token by token; NotArithmetic if any part is not arithmetic."""
    tokens: list[str] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise NotArithmetic(f"not arithmetic at {text[pos:pos + 20]!r}")
        if m.group("num"):
            tokens.append(m.group("num").replace(",", ""))
        elif m.group("op"):
            tokens.append(_OP_SYMBOL[" ".join(m.group("op").lower().split())])
        else:
            tokens.append(m.group("paren"))
        pos = m.end()
    if not tokens:
        raise NotArithmetic("empty expression")
    return Expression(tuple(tokens))


@dataclass(frozen=True)
class ArithmeticQuestion:
    text: str
    expression: Expression
    value: Fraction


def read_question(text: str) -> ArithmeticQuestion | None:
    """The question as one phrasing around one computable expression, or None."""
    for pattern in _QUESTION:
        m = pattern.match(text)
        if m is None:
            continue
        try:
            expr = tokenize(m.group("e"))
            if expr.operators == 0:
                continue  # "What is 12?" asks nothing
            value = expr.value()
        except (NotArithmetic, ZeroDivisionError):
            continue
        if abs(value) > MAX_ABS_VALUE or value.denominator > MAX_DENOMINATOR:
            return None
        return ArithmeticQuestion(text=text, expression=expr, value=value)
    return None


def decimals_in(expr: Expression) -> int:
    """Digits after the decimal point in the question's most precise number."""
    return max((len(n.split(".", 1)[1]) for n in expr.numbers if "." in n), default=0)


def format_exact(value: Fraction) -> str:
    """A value as text that reads back exactly: "12", "-3.375", "1/3"."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # a terminating decimal
        digits = 0
        while (value * 10**digits).denominator != 1:
            digits += 1
        scaled = abs(value.numerator * 10**digits // value.denominator)
        whole, frac = divmod(scaled, 10**digits)
        return f"{'-' if value < 0 else ''}{whole}.{frac:0{digits}d}"
    return f"{value.numerator}/{value.denominator}"
