"""Math: the target fails when its final answer differs from the reference.

Two ways to get the reference for a proposed question:
- ``exact`` (the default job): the question must carry an arithmetic expression,
  whose exact value a parser computes (``judges.math.evaluate_expression``, never eval);
  questions without one are dropped as invalid;
- ``solver``: a stronger model answers greedily and its final number is the reference
  (configure ``judge.model``).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from failforge.errors import ConfigError
from failforge.judges.answers import format_number
from failforge.judges.math import ExpressionError, evaluate_expression, reference_value
from failforge.judges.registry import JudgeSpec
from failforge.models.base import ChatModel, SamplingParams
from failforge.tasks.base import Candidate, Seed, Task, first_line
from failforge.tasks.seeds import load_rows

# Runs of characters an arithmetic expression is written with.
_EXPR_RUN = re.compile(r"[\d\s.,+\-*/×÷^()−]+")
_HAS_OP = re.compile(r"\d\s*[+\-*/×÷^−]\s*[(\d]")
MAX_ABS_VALUE = 10**9


def find_expression(text: str) -> tuple[str, Fraction] | None:
    """The longest arithmetic expression in ``text`` that evaluates, with its value."""
    best: tuple[str, Fraction] | None = None
    for m in _EXPR_RUN.finditer(text):
        expr = m.group(0).strip().rstrip(".,").strip()
        if not _HAS_OP.search(expr) or (best and len(expr) <= len(best[0])):
            continue
        try:
            value = evaluate_expression(expr)
        except (ExpressionError, ZeroDivisionError):
            continue
        if abs(value) <= MAX_ABS_VALUE and value.denominator <= 1000:
            best = (expr, value)
    return best


class MathTask(Task):
    name = "math"
    proposer_top_p = 0.9
    item_label = "Question"
    request = "Write one new math question of the same kind. Reply with the question only."

    def __init__(self, reference: Literal["exact", "solver"] = "exact"):
        self.reference = reference

    def load_seeds(self, source: str, n: int | None, seed: int) -> list[Seed]:
        rows = load_rows(source, n, seed)
        seeds = []
        for i, r in enumerate(rows):
            text = r.get("question") or r.get("prompt") or r.get("text")
            if not text:
                raise ConfigError(f"seeds {source}: row {i + 1} has no question/prompt/text field")
            ref = r.get("answer", r.get("reference"))
            seeds.append(Seed(id=str(r.get("id", i)), text=text, reference=None if ref is None else str(ref)))
        return seeds

    def parse(self, text: str) -> Candidate | None:
        q = first_line(text)
        if not (8 <= len(q) <= 400):
            return None
        if self.reference == "solver":
            return Candidate(text=q)
        found = find_expression(q)
        if found is None:
            return None
        expr, value = found
        return Candidate(text=q, reference=format_number(value), meta={"expression": expr})

    def default_judge(self) -> JudgeSpec:
        return JudgeSpec(kind="math")

    def make_judge(self, spec, model=None):
        spec = spec or self.default_judge()
        if self.reference == "solver" and spec.model is None and model is None:
            raise ConfigError("task math with reference 'solver' needs judge.model (the stronger reference model)")
        return super().make_judge(spec, model)

    def good_responses(self, items, teacher: ChatModel | None):
        out: list[str | None] = []
        for cand, _responses, _score in items:
            value = reference_value(cand.reference)
            if value is None:
                out.append(None)
                continue
            expr = cand.meta.get("expression")
            shown = format_number(value)
            work = f"{expr} = {shown}\n" if expr else ""
            out.append(f"{work}#### {shown}")
        return out

    def target_params(self, base: SamplingParams) -> SamplingParams:
        return base.model_copy(update={"temperature": 0.0, "n": 1})
