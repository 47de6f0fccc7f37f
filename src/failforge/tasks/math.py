"""Math: the target fails when its answer differs from the reference.

Two ways to get the reference for a proposed question:
- ``exact`` (the default job): the whole question must read as one arithmetic
  question ("What is 7 + 5?", "Calculate (3 + 4) * 2.", ... see ``judges.arithmetic``),
  and its reference is the expression's exact value (a ``Fraction``, never eval);
  every other sample is invalid and counted as such;
- ``solver``: a stronger model answers greedily and its final number is the reference
  (configure ``judge.model``).
"""

from __future__ import annotations

from typing import Literal

from failforge.errors import ConfigError
from failforge.judges.arithmetic import format_exact, read_question
from failforge.judges.math import reference_value
from failforge.judges.registry import JudgeSpec
from failforge.models.base import ChatModel, SamplingParams
from failforge.tasks.base import Candidate, Seed, Task, first_line
from failforge.tasks.seeds import load_rows


class MathTask(Task):
    name = "math"
    proposer_top_p = 0.9
    proposer_stop = ("\n",)
    item_label = "Question"
    request = "Write one new math question of the same kind. Reply with the question only."

    def __init__(self, reference: Literal["exact", "solver"] = "exact"):
        self.reference = reference

    def load_seeds(self, source: str, n: int | None, seed: int) -> list[Seed]:
        rows = load_rows(source, n, seed)
        seeds, unreadable = [], 0
        for i, r in enumerate(rows):
            text = r.get("question") or r.get("prompt") or r.get("text")
            if not text:
                raise ConfigError(f"seeds {source}: row {i + 1} has no question/prompt/text field")
            ref = r.get("answer", r.get("reference"))
            if self.reference == "exact":
                question = read_question(str(text))
                if question is None:  # not one arithmetic question: nothing exact to check against
                    unreadable += 1
                    continue
                ref = format_exact(question.value)
            seeds.append(Seed(id=str(r.get("id", i)), text=text, reference=None if ref is None else str(ref)))
        if not rows:
            raise ConfigError(f"seeds {source}: no rows (an empty file?)")
        if not seeds:
            raise ConfigError(
                f"seeds {source}: none of {len(rows)} rows is an arithmetic question "
                f"(\"What is <expression>?\"); use task_options.reference: solver for word problems"
            )
        return seeds

    def parse(self, text: str) -> Candidate | None:
        q = first_line(text)
        if not (8 <= len(q) <= 400):
            return None
        if self.reference == "solver":
            return Candidate(text=q)
        question = read_question(q)
        if question is None:
            return None
        return Candidate(text=q, reference=format_exact(question.value), meta={"expression": question.expression.text})

    def default_judge(self) -> JudgeSpec:
        return JudgeSpec(kind="math")

    def make_judge(self, spec, model=None):
        spec = spec or self.default_judge()
        if self.reference == "solver" and spec.model is None and model is None:
            raise ConfigError("task math with reference 'solver' needs judge.model (the stronger reference model)")
        return super().make_judge(spec, model)

    def labelled_set(self, judge):
        """The embedded model's answers to arithmetic questions, labelled by reading them."""
        if self.reference != "exact" or judge.id != "math":
            return None
        from failforge.judges.measured import packaged_labels

        cols = {"text_col": "response", "label_col": "label", "instruction_col": "instruction"}
        return packaged_labels("math_answers.jsonl"), cols

    def good_responses(self, items, teacher: ChatModel | None):
        out: list[str | None] = []
        for cand, _responses, _score in items:
            value = reference_value(cand.reference)
            if value is None:
                out.append(None)
                continue
            expr = cand.meta.get("expression")
            shown = format_exact(value)
            work = f"{expr} = {shown}\n" if expr else ""
            out.append(f"{work}#### {shown}")
        return out

    def target_params(self, base: SamplingParams) -> SamplingParams:
        return base.model_copy(update={"temperature": 0.0, "n": 1})
