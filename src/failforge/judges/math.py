"""Math answer checking: the answer a response gives against an exact reference.

- An empty response, or one the target errored on, is ``unscorable`` (nothing was said).
- A response that states two different answers is ``unscorable``, never ``pass``.
- A non-empty response that states no answer *did* fail the question: ``fail`` by
  default (``no_answer: unscorable`` turns that off).
- Comparison is exact (``Fraction``): integers and terminating decimals must be equal;
  a non-terminating value (1/3) is matched by the fraction or by a decimal correctly
  rounded to at least ``decimal_places`` digits (or the question's own precision).
The verdict score is 1.0 for a wrong (or missing) answer and 0.0 for a right one.
"""

from __future__ import annotations

import ast
import operator
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from failforge.judges.answers import extract_final_number, format_number, parse_number, response_problem
from failforge.judges.arithmetic import ArithmeticQuestion, decimals_in, format_exact, read_question
from failforge.judges.math_answer import Stated, agrees, statements
from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.models.base import ChatModel, SamplingParams

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 64
MAX_DIGITS = 2000


class ExpressionError(ValueError):
    """The expression is not plain arithmetic, or too large to compute."""


def evaluate_expression(expr: str) -> Fraction:
    """Exact value of an arithmetic expression: numbers, + - * / **, parentheses.

    Walks Python's own parse tree (``ast``) and computes with ``Fraction``; anything
    else (names, calls, attributes, huge powers) is rejected. Never ``eval``.
    """
    text = str(expr).replace("^", "**").replace("×", "*").replace("÷", "/").replace("−", "-")
    text = text.replace(",", "")  # thousands separators
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return _eval(tree.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        if isinstance(e, ExpressionError):
            raise
        raise ExpressionError(f"not an arithmetic expression: {str(expr)[:60]!r}") from e


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1:
                raise ExpressionError("only whole-number exponents are supported")
            if abs(right) > MAX_EXPONENT:
                raise ExpressionError(f"exponent {right} is larger than {MAX_EXPONENT}")
            if left == 0 and right < 0:
                raise ExpressionError("division by zero")
        if isinstance(node.op, ast.Div) and right == 0:
            raise ExpressionError("division by zero")
        value = _BINOPS[type(node.op)](left, right)
        if len(str(value.numerator)) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
            raise ExpressionError("value too large")
        return value
    raise ExpressionError(f"unsupported element {type(node).__name__}")


def reference_value(ref: Any) -> Fraction | None:
    """A reference as data gives it: a number, a numeric string, an arithmetic
    expression ("3*(4+5)"), or a worked solution ending in "#### N"."""
    if ref is None or isinstance(ref, bool):
        return None
    if isinstance(ref, (int, Fraction)):
        return Fraction(ref)
    if isinstance(ref, float):
        return Fraction(str(ref))
    text = str(ref).strip()
    if not text:
        return None
    try:
        return evaluate_expression(text)
    except ExpressionError:
        pass
    if len(text) < 40 and "####" not in text and "boxed" not in text:  # a short answer: "$1,200", "18 dollars"
        value = parse_number(text)
        if value is not None:
            return value
    value, _ = extract_final_number(text)
    return value


class MathConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: what a non-empty response that states no answer is (a missed question is a failure)
    no_answer: Literal["fail", "unscorable"] = "fail"
    #: a decimal answer to a question whose value does not terminate (10 / 3) must have at
    #: least this many digits after the point (or the question's own, if more), correctly rounded
    decimal_places: int = Field(2, ge=0, le=12)
    #: word problems only (no arithmetic grammar): read the last number when no answer is marked
    last_number_fallback: bool = False
    #: tokens the reference solver may use (only when a solver model is given)
    solver_max_tokens: int = Field(512, ge=1)


class MathJudge(Judge):
    """Arithmetic questions ("What is 7 + 5?") are read with their grammar: the
    reference is the expression's exact value unless one is given, and the response is
    read for the answer it gives to that expression (``judges.math_answer``). Other
    questions (word problems) use a given reference or the solver's, and the response's
    marked final answer (``####``, ``\\boxed{}``, "the answer is")."""

    id = "math"
    version = "2"

    def __init__(self, config: MathConfig | None = None, solver: ChatModel | None = None):
        self.config = config or MathConfig()
        # Items without a reference are sent to the solver (a stronger model), greedy.
        self.solver = solver

    def _references(self, items: list[JudgeInput], questions) -> list[tuple[Fraction | None, str]]:
        refs: list[tuple[Fraction | None, str]] = []
        for item, q in zip(items, questions):
            if item.reference is not None:
                refs.append((reference_value(item.reference), "reference"))
            elif q is not None:
                refs.append((q.value, "exact"))
            else:
                refs.append((None, "reference"))
        ask = [k for k, i in enumerate(items) if refs[k][0] is None and i.reference is None]
        if ask and self.solver is not None:
            params = SamplingParams(temperature=0.0, max_tokens=self.config.solver_max_tokens)
            outs = self.solver.generate([items[k].instruction for k in ask], params)
            for k, out in zip(ask, outs):
                value, _ = extract_final_number(out[0].text)
                refs[k] = (value, "solver")
        return refs

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        questions = [read_question(i.instruction) for i in items]
        refs = self._references(items, questions)
        return [self._one(item, q, ref, source) for item, q, (ref, source) in zip(items, questions, refs)]

    def _stated(self, item: JudgeInput, question: ArithmeticQuestion | None) -> list[Stated]:
        found = statements(item.response, question)
        if not found and question is None and self.config.last_number_fallback:
            value, how = extract_final_number(item.response)
            if value is not None:
                found = [Stated(value, format_number(value), how)]
        return found

    def _one(self, item: JudgeInput, question: ArithmeticQuestion | None, ref: Fraction | None, source: str) -> Verdict:
        problem = response_problem(item)
        if problem:
            return self.verdict("unscorable", None, problem)
        if ref is None:
            what = "the solver gave no final number" if source == "solver" else "no usable reference value"
            return self.verdict("unscorable", None, what)
        found = self._stated(item, question)
        if not found:
            if self.config.no_answer == "fail":
                return self.verdict("fail", 1.0, "no answer to the question")
            return self.verdict("unscorable", None, "no answer to the question")
        distinct = {s.value: s for s in found}
        if len(distinct) > 1:
            shown = ", ".join(f"{s.literal} ({s.how})" for s in distinct.values())
            return self.verdict("unscorable", None, f"states different answers: {shown}")
        stated = found[-1]
        places = max(self.config.decimal_places, decimals_in(question.expression) if question else 0)
        ok = agrees(stated, ref, places)
        reason = f"{stated.literal} ({stated.how}) {'==' if ok else '!='} {format_exact(ref)} ({source})"
        return self.verdict("pass" if ok else "fail", 0.0 if ok else 1.0, reason)
