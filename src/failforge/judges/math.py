"""Math answer checking: the target's final number against a reference value.

Policy for responses with nothing to compare (configurable, ``no_answer``):
- an empty response, or one the target errored on, is ``unscorable`` (nothing was said);
- a non-empty response with no final number *did* fail the question, so by default
  it is ``fail`` with reason "no final answer"; ``no_answer: unscorable`` turns that off.
The verdict score is 1.0 for a wrong (or missing) answer and 0.0 for a right one.
"""

from __future__ import annotations

import ast
import operator
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from failforge.judges.answers import extract_final_number, format_number, parse_number, response_problem
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

    #: what a non-empty response without a final number is
    no_answer: Literal["fail", "unscorable"] = "fail"
    rel_tol: float = Field(1e-6, ge=0)
    abs_tol: float = Field(1e-9, ge=0)
    #: tokens the reference solver may use (only when a solver model is given)
    solver_max_tokens: int = Field(512, ge=1)


class MathJudge(Judge):
    id = "math"
    version = "1"

    def __init__(self, config: MathConfig | None = None, solver: ChatModel | None = None):
        self.config = config or MathConfig()
        # Items without a reference are sent to the solver (a stronger model), greedy.
        self.solver = solver

    def _references(self, items: list[JudgeInput]) -> list[tuple[Fraction | None, str]]:
        refs: list[tuple[Fraction | None, str]] = [(reference_value(i.reference), "reference") for i in items]
        ask = [k for k, i in enumerate(items) if i.reference is None]
        if ask and self.solver is not None:
            params = SamplingParams(temperature=0.0, max_tokens=self.config.solver_max_tokens)
            outs = self.solver.generate([items[k].instruction for k in ask], params)
            for k, out in zip(ask, outs):
                value, _ = extract_final_number(out[0].text)
                refs[k] = (value, "solver")
        return refs

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out = []
        for item, (ref, source) in zip(items, self._references(items)):
            out.append(self._one(item, ref, source))
        return out

    def _one(self, item: JudgeInput, ref: Fraction | None, source: str) -> Verdict:
        problem = response_problem(item)
        if problem:
            return self.verdict("unscorable", None, problem)
        if ref is None:
            what = "the solver gave no final number" if source == "solver" else "no usable reference value"
            return self.verdict("unscorable", None, what)
        got, how = extract_final_number(item.response)
        if got is None:
            if self.config.no_answer == "fail":
                return self.verdict("fail", 1.0, "no final answer")
            return self.verdict("unscorable", None, "no final answer")
        tol = max(self.config.abs_tol, self.config.rel_tol * abs(float(ref)))
        ok = abs(float(got - ref)) <= tol
        reason = f"{format_number(got)} ({how}) {'==' if ok else '!='} {format_number(ref)} ({source})"
        return self.verdict("pass" if ok else "fail", 0.0 if ok else 1.0, reason)
