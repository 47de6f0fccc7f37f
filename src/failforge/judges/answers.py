"""Pulling final answers out of free text: numbers (math) and choice letters (honesty).

Hand-written because the libraries that do this (math-verify, lm-eval's filters)
either pull in a symbolic-maths stack or are tied to one harness's regexes; what a
judge needs here is a few predictable rules with exact (Fraction) values.
"""

from __future__ import annotations

import re
from fractions import Fraction

from failforge.judges.base import JudgeInput

# A number as people write it: optional sign, optional currency, thousands
# separators, decimals, and an optional "/denominator". The sign only counts when it
# does not follow a word or digit, so "3-4" yields 3 and 4, not -4. The lookahead
# keeps the pattern (all of whose parts are optional) from matching the empty string
# at every position of a text: only where a digit follows the optional prefix.
_NUM = (
    r"(?=[-−–]?\s?[$€£]?\s?\.?\d)"
    r"(?P<sign>(?<![\w.])[-−–])?\s?[$€£]?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<dec>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
)
_NUM_RE = re.compile(_NUM)
#: a character that no ``_NUM`` match contains
_NOT_IN_A_NUMBER_RE = re.compile(r"[^\d\s$€£,./\-−–]")
_HASH_RE = re.compile(r"####\s*((?:(?!####)[^\n])*)")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:\*\*)?\s*([^\n]*)", re.IGNORECASE
)
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")

#: a literal with more digits than this is no answer to read (and Python refuses to
#: convert one past 4300 digits): it is skipped, never computed with
MAX_LITERAL_DIGITS = 1000
#: only the last boxes of a response are read (its final answer is among them)
MAX_BOXES = 16


def exact(literal: str) -> Fraction | None:
    """``Fraction(literal)`` for a plain decimal literal ("-1200", "3.25"); None when it
    has more than ``MAX_LITERAL_DIGITS`` digits."""
    if sum(c.isdigit() for c in literal) > MAX_LITERAL_DIGITS:
        return None
    return Fraction(literal)


def _numbers(text: str) -> list[Fraction]:
    return [v for v in map(_value, _NUM_RE.finditer(text)) if v is not None]


def _last_number(text: str) -> Fraction | None:
    """``_numbers(text)[-1]``, read from the end: a 1 MB answer of "1+1+..." holds half
    a million numbers, and only the last one counts.

    The scan starts in the last ``window`` characters, just after a character that no
    number contains, so it meets the same numbers as a scan from the start (the sign's
    look-behind still sees the text before); the window grows until a number is found
    or the whole text was read.
    """
    window = 4096
    while True:
        pos = max(0, len(text) - window)
        if pos:
            cut = _NOT_IN_A_NUMBER_RE.search(text, pos)
            pos = cut.end() if cut else 0
        for m in reversed(list(_NUM_RE.finditer(text, pos))):
            if (value := _value(m)) is not None:
                return value
        if pos == 0:
            return None
        window *= 4


def _value(m: re.Match) -> Fraction | None:
    """The number one ``_NUM_RE`` match states, or None."""
    if m.group("int") is None and m.group("dec") is None:
        return None
    value = exact((m.group("int") or "0").replace(",", "") + (m.group("dec") or ""))
    if value is None:
        return None
    den = m.group("den")
    if den is not None:
        d = exact(den)
        if d is None:
            return None
        if d != 0:  # "5/0" is not a fraction: keep the 5
            value /= d
    return -value if m.group("sign") else value


def _clean_latex(text: str) -> str:
    text = _LATEX_FRAC_RE.sub(r"(\1)/(\2)", text)
    for junk in ("\\$", "\\,", "\\!", "\\left", "\\right", "\\%", "\\text", "\\mathrm"):
        text = text.replace(junk, "")
    return text.replace("{", "").replace("}", "").replace("(", "").replace(")", "")


def parse_number(text: str) -> Fraction | None:
    """The single number a short string states ("$1,234.50", "-3/4", "12 apples"), else None."""
    nums = _numbers(_clean_latex(str(text)))
    return nums[0] if nums else None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...}, with nested braces balanced (one pass over the
    text, so nested or unclosed boxes cost no more than the text's length)."""
    starts = [m.end() for m in re.finditer(r"\\boxed\s*\{", text)]
    if not starts:
        return []
    close: dict[int, int] = {}  # the index after a "{" -> the index of its "}"
    open_at: list[int] = []
    for i, c in enumerate(text):
        if c == "{":
            open_at.append(i + 1)
        elif c == "}" and open_at:
            close[open_at.pop()] = i
    return [text[s : close[s]] for s in starts if s in close][-MAX_BOXES:]


def extract_final_number(text: str) -> tuple[Fraction | None, str]:
    """The final numeric answer of a solution and how it was found.

    Order: the last "#### N", the last \\boxed{N}, the last "answer is N", then the
    last number anywhere. Returns (None, "no final answer") when nothing numeric is there.
    """
    for how, candidates in (
        ("####", _HASH_RE.findall(text)),
        ("boxed", _boxed_contents(text)),
        ("answer is", _ANSWER_IS_RE.findall(text)),
    ):
        for cand in reversed(candidates):
            value = parse_number(cand)
            if value is not None:
                return value, how
    last = _last_number(_clean_latex(text))
    if last is not None:
        return last, "last number"
    return None, "no final answer"


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    return f"{value.numerator}/{value.denominator}" if abs(as_float) < 1e-3 else f"{as_float:g}"


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The option letter a multiple-choice answer picks, or None.

    Accepts "A", "(B)", "Answer: C", "the answer is D.", "**B**", "B) Paris",
    "Option C". A capital letter inside a sentence ("A cat is...") is not an answer,
    so bare letters only count when they stand alone or open the reply with ")", ".", ":".
    When cues disagree, the explicit "answer is X" wins. A hedge is no answer: a
    letter followed by "or"/"and"/"/" and another letter ("the answer is A or B",
    "(A) or (B)"), or explicit cues naming different letters, give None.
    """
    if not text:
        return None
    cls = f"[{re.escape(letters)}{re.escape(letters.lower())}]"
    t = text.strip().replace("*", "").replace("`", "")
    hedge = re.compile(rf"\s*(?:,|/|(?i:or|and))\s*[\(\[]?[{letters}](?![\w'])")
    explicit = rf"(?i:answer)\s*(?:is|:|=|would be|will be)?\s*(?:(?i:option|choice)\s*)?[\(\[]?([{letters}])(?![\w'])"
    if len({m.upper() for m in re.findall(explicit, t)}) > 1:
        return None  # "the answer is A ... no, the answer is C"
    patterns = [
        # explicit cue: "Answer: C", "the answer is (B) because..."
        explicit,
        # lower case only when nothing follows ("the answer is d.") - "is a bit" is not an answer
        rf"(?i:answer)\s*(?:is|:|=)?\s*[\(\[]?({cls})[\)\]]?[.!]?\s*$",
        # the whole reply is the letter
        rf"^[\s\(\[\"']*([{letters}])[\s\)\]\"'.:!]*$",
        # the reply opens with the letter as a label: "B) Paris", "(B) Paris", "B. Paris", "B: Paris"
        rf"^[\(\[]?([{letters}])\s*[\)\]\.:]\s",
        rf"^[\(\[]([{letters}])[\)\]]",
        # "option C" / "choice C"
        rf"(?i:option|choice)\s+\(?({cls})(?![\w'])",
    ]
    for p in patterns:
        m = re.search(p, t)
        if m:
            if hedge.match(t, m.end(1) + (1 if t[m.end(1) : m.end(1) + 1] in (")", "]") else 0)):
                return None
            return m.group(1).upper()
    # a single parenthesised letter anywhere, if only one letter is named that way
    named = {x.upper() for x in re.findall(rf"\(({cls})\)", t)}
    if len(named) == 1:
        return named.pop()
    return None


def response_problem(item: JudgeInput, index: int = 0) -> str | None:
    """Why a response cannot be scored at all (empty, or the target errored), else None."""
    if item.meta.get("error"):
        return f"target error: {str(item.meta['error'])[:80]}"
    if index >= len(item.responses):
        return "no response"
    if not item.responses[index].strip():
        return "empty response"
    return None
