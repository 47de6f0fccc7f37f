"""Reading the answer a response gives to *this* arithmetic question.

The last number of a response is often not its answer ("11 + 11 = 22, which is the
sum of 11 and 11." ends with 11). So a response is read for statements that answer
the question, and only those:

- ``#### N`` and ``\\boxed{N}``;
- "the answer is N", "answer: N", "the result is N", "the sum (of ...) is N", ...;
- for a one-operation question, the result of the operation it describes
  ("multiply 2 by 3, which is 6");
- the question's own expression stated with its value: "11 + 11 = 22",
  "7 times 7 is 49", "3 * 4 + 5 = 12 + 5 = 17" (the last number of the chain);
- a response that is nothing but a number ("22", "twenty-two.").

Each statement gives a value and the literal it was written as (a decimal's digits
matter for comparing against a non-terminating reference). Small number words
(zero to nine hundred ninety-nine) are read too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from failforge.judges.answers import exact
from failforge.judges.arithmetic import ArithmeticQuestion

_CLEAN = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"(\1)/(\2)"),
    (re.compile(r"\\times"), "×"),
    (re.compile(r"\\div"), "÷"),
    (re.compile(r"\\cdot"), "·"),
    (re.compile(r"\\[()\[\]]|\$|\*\*|__|`"), ""),
]

# A number literal: sign, thousands separators, decimals, or a simple fraction "3/4".
_LITERAL = r"[-−–]?\s?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−–]?\s?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|[-−–]?\s?\.\d+"
_LITERAL_RE = re.compile(rf"^(?:{_LITERAL})$")
# A chain "12 + 5 = 17" after a statement: arithmetic characters and "=" only.
_CHAIN = re.compile(r"[-−–+*/×÷·^()=.,\d\s]+")
#: what a statement's value is read from: this many characters after its cue. A chain
#: that fills them is not read (it has no end to take the value from); the bound keeps
#: a response of many cues ("7 + 5 = 7 + 5 = ...") linear in its length.
VALUE_WINDOW = 400

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_WORD = "|".join(sorted(_WORD_VALUE, key=len, reverse=True))
_WORDS_RE = re.compile(
    rf"\b(?:(?P<h>{_WORD})\s+hundred(?:\s+and)?\s*)?(?P<t>{_WORD})?(?:[-\s](?P<u>{_WORD}))?\b", re.IGNORECASE
)

_CUE = (
    r"(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|result|solution)(?:\s+to\s+[^.=\n]{1,40}?)?"
    r"\s*(?:\bis\b|:|=|\bwould\s+be\b|\bwill\s+be\b|\bequals\b)\s*"
    r"|the\s+(?:sum|difference|product|quotient|total|value)(?:\s+of\s+[^.=\n]{1,60}?)?\s+(?:is|=|equals|would\s+be)\s*"
)
_CUE_RE = re.compile(_CUE, re.IGNORECASE)
# "multiply 2 by 3, which is 6": the result of an operation the response describes
_DESCRIBED_RE = re.compile(
    r"\b(?:multiply|multiplying|multiplied|add|adding|added|subtract|subtracting|subtracted|divide|dividing|divided)\b[^.\n]{0,60}?,\s*"
    r"which\s+(?:is|equals|gives(?:\s+(?:us|you))?)\s*",
    re.IGNORECASE,
)
# a number that continues into a phrase ("49 being multiplied by ...") is not a stated result
_CONTINUES = re.compile(r"\s*(?:being|multiplied|divided|times|plus|minus|added|subtracted|raised|squared|cubed)\b", re.I)
_STATES = (
    r"\s*(?:=|is\s+equal\s+to|is\s+equivalent\s+to|equals|is|would\s+be|will\s+be|gives(?:\s+us)?"
    r"|makes|results\s+in|comes\s+to)\s*"
)
_OP_WORDS = {
    "+": r"(?:\+|plus)",
    "-": r"(?:[-−–]|minus)",
    "*": r"(?:[*×x·]|times|multiplied\s+by)",
    "/": r"(?:[/÷]|divided\s+by)",
    "^": r"(?:\^|\*\*)",
    "(": r"\(",
    ")": r"\)",
}


@dataclass(frozen=True)
class Stated:
    """One value the response states as its answer."""

    value: Fraction
    literal: str
    how: str


def clean(text: str) -> str:
    for pattern, repl in _CLEAN:
        text = pattern.sub(repl, text)
    return text


def parse_literal(text: str) -> Fraction | None:
    t = text.strip().replace("−", "-").replace("–", "-").replace(" ", "").replace(",", "")
    if not t or not _LITERAL_RE.match(text.strip()):
        return None
    if "/" in t:
        num, den = (exact(x) for x in t.split("/", 1))
        return None if num is None or den is None or den == 0 else num / den
    return exact(t)


def _words_at(text: str) -> tuple[Fraction, str] | None:
    m = _WORDS_RE.match(text)
    if m is None or not m.group(0).strip():
        return None
    h, t, u = (m.group(k) and m.group(k).lower() for k in ("h", "t", "u"))
    if u and (t is None or _WORD_VALUE[t] < 20 or _WORD_VALUE[u] >= 10):
        return None  # "five six" is not a number
    value = (_WORD_VALUE[h] * 100 if h else 0) + (_WORD_VALUE[t] if t else 0) + (_WORD_VALUE[u] if u else 0)
    return Fraction(value), m.group(0).strip()


def value_at(text: str) -> tuple[Fraction, str] | None:
    """The value stated at the start of ``text``: a number, the end of a chain
    ("12 + 5 = 17" -> 17), or number words. None when it is an unfinished expression."""
    m = _CHAIN.match(text)
    if m and any(c.isdigit() for c in m.group(0)):
        run = m.group(0)
        # a sentence's full stop or a list's comma ends the run: "22, which" / "22."
        run = re.split(r"[.,](?!\d)", run, maxsplit=1)[0]
        if len(run) >= VALUE_WINDOW:
            return None
        last = run.split("=")[-1].strip().rstrip("-−–+*/×÷·^( ").strip()
        if _CONTINUES.match(text[len(m.group(0).rstrip()):]):
            return None
        value = parse_literal(last)
        return None if value is None else (value, last)
    return _words_at(text)


def _expression_pattern(question: ArithmeticQuestion) -> re.Pattern[str]:
    parts = []
    for tok in question.expression.tokens:
        if tok in _OP_WORDS:
            parts.append(_OP_WORDS[tok])
        else:
            whole, _, dec = tok.partition(".")
            grouped = re.sub(r"\B(?=(\d{3})+(?!\d))", ",?", whole)
            parts.append(grouped + (r"\." + dec if dec else ""))
    return re.compile(r"\s*".join(parts) + _STATES, re.IGNORECASE)


def _follows_arithmetic(text: str, start: int) -> bool:
    """Whether the match at ``start`` is the tail of a longer expression ("2 + 3 * 4")."""
    i = start - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i >= 0 and (text[i].isdigit() or text[i] in "+-*/×÷·^(−–.")


def _after(text: str, i: int) -> tuple[Fraction, str] | None:
    """The value stated at ``text[i:]``, read from its first ``VALUE_WINDOW`` characters."""
    return value_at(text[i : i + VALUE_WINDOW])


def statements(response: str, question: ArithmeticQuestion | None) -> list[Stated]:
    """Every value the response states as the answer to the question."""
    text = clean(response)
    found: list[Stated] = []
    for m in re.finditer(r"####\s*", text):
        v = _after(text, m.end())
        if v:
            found.append(Stated(v[0], v[1], "####"))
    for m in re.finditer(r"\\boxed\s*\{([^{}]*)\}", text):
        v = value_at(m.group(1))
        if v:
            found.append(Stated(v[0], v[1], "boxed"))
    for m in _CUE_RE.finditer(text):
        v = _after(text, m.end())
        if v:
            found.append(Stated(v[0], v[1], "answer is"))
    # only for one-operation questions: in a multi-step one it names an intermediate step
    for m in _DESCRIBED_RE.finditer(text) if question is not None and question.expression.operators == 1 else []:
        v = _after(text, m.end())
        if v:
            found.append(Stated(v[0], v[1], "described operation"))
    if question is not None:
        for m in _expression_pattern(question).finditer(text):
            if _follows_arithmetic(text, m.start()):
                continue
            v = _after(text, m.end())
            if v:
                found.append(Stated(v[0], v[1], "own expression"))
    whole = text.strip().rstrip(".!").strip()
    if not found and whole:
        value = parse_literal(whole)
        if value is not None:
            found.append(Stated(value, whole, "whole response"))
        else:
            w = _words_at(whole)
            if w and w[1].lower() == whole.lower():
                found.append(Stated(w[0], whole, "whole response"))
    return found


def decimal_digits(literal: str) -> int | None:
    """Digits after the point of a decimal literal; None for integers and fractions."""
    t = literal.replace(",", "").strip()
    if "/" in t or "." not in t:
        return None
    return len(t.split(".", 1)[1])


def terminates(value: Fraction) -> bool:
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def round_half_up(value: Fraction, digits: int) -> Fraction:
    scale = 10**digits
    scaled = abs(value) * scale
    n = int(scaled + Fraction(1, 2))
    return Fraction(n if value >= 0 else -n, scale)


def agrees(stated: Stated, reference: Fraction, min_places: int) -> bool:
    """Exact for integer and terminating references; a non-terminating one (1/3) is
    matched by the exact fraction or by a decimal rounded to at least ``min_places``."""
    if stated.value == reference:
        return True
    if terminates(reference):
        return False
    digits = decimal_digits(stated.literal)
    return digits is not None and digits >= min_places and round_half_up(reference, digits) == stated.value
