"""The evaluate stage: arms (trained, baselines, controls) scored on the same held-out
items, each rate with its Wilson interval, in one comparison table.

Two kinds of arm:
- a model that answers held-out instructions, its answers judged
  (``answer_and_judge``, stored as ``eval_records``; ReverseGen, Mistake Analysis);
- a judge whose ``fail`` verdicts are predictions of a positive class (e.g.
  "problematic"); ``score_arm`` compares them with the true classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.methods.judging import answer_error, judge_or_error
from failforge.metrics.rates import RateEstimate, rate
from failforge.run.records import EvalRecord, Provenance, record_id

if TYPE_CHECKING:
    from failforge.models.base import Completion, Message, SamplingParams
    from failforge.run.context import RunContext


def answer_and_judge(
    ctx: "RunContext",
    model,
    judge: Judge,
    instructions: list[str],
    conversations: "list[list[Message]] | list[str]",
    params: "SamplingParams",
    description: str,
    references: list[Any] | None = None,
) -> "tuple[list[list[Completion]], list[Verdict]]":
    """The model answers each conversation (cached, with progress); the judge reads
    each answer against its instruction (and reference)."""
    with ctx.tracked(model, description, len(conversations) * params.n):
        answers = model.generate(conversations, params) if conversations else []
    refs = references if references is not None else [None] * len(instructions)
    inputs = [
        JudgeInput(instruction=i, responses=[c.text for c in comps], reference=r) for i, comps, r in zip(instructions, answers, refs)
    ]
    return answers, judge_or_error(judge, inputs, answers)


def eval_records(
    stage: str, arm: str, instructions: list[str], answers, verdicts: list[Verdict], provenance: Provenance,
    harmful: bool, references: list[Any] | None = None,
) -> list[EvalRecord]:
    """One evaluation record per answered instruction (never training data)."""
    refs = references if references is not None else [None] * len(instructions)
    return [
        EvalRecord(
            id=record_id(f"{stage}-{arm}", text), stage=stage, arm=arm, instruction=text, responses=[a.text for a in comps],
            reference=ref, label=v.label, score=v.score, reason=v.reason, harmful_content=harmful, provenance=provenance,
            error=answer_error(comps),
        )
        for text, comps, v, ref in zip(instructions, answers, verdicts, refs)
    ]


def mmlu_prompt(q: dict[str, Any]) -> str:
    """A multiple-choice question (``question``, ``choices``) as a prompt asking for the letter."""
    from failforge.tasks.honesty import render

    return render(q["question"], q["choices"]) + "\nAnswer with the letter of the correct option."


def fmt_score(v: Any) -> str:
    """A score for a terminal table: 3 decimals, "-" when missing."""
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def fmt_ci(get, key: str) -> str:
    """``key`` with its ``_lo``/``_hi`` interval, as "0.42 [0.30, 0.55]" ("-" when missing)."""
    v = get(key)
    return "-" if v is None else f"{v:.2f} [{get(key + '_lo'):.2f}, {get(key + '_hi'):.2f}]"


def accuracy(verdicts: list[Verdict]) -> RateEstimate:
    """Share of ``pass`` verdicts among all of them (e.g. multiple choice right), with its
    Wilson interval; an unscorable verdict counts as wrong: the model did not answer."""
    return rate(sum(1 for v in verdicts if v.label == "pass"), len(verdicts))


def pass_rate(verdicts: list[Verdict]) -> RateEstimate:
    """Share of ``pass`` verdicts among the scored ones (e.g. the harmless rate), with
    its Wilson interval; unscorable verdicts are left out and counted by the caller."""
    scored = [v for v in verdicts if v.label != "unscorable"]
    return rate(sum(1 for v in scored if v.label == "pass"), len(scored))


class ArmScore(BaseModel):
    arm: str
    n: int
    unscorable: int
    accuracy: float | None
    accuracy_lo: float
    accuracy_hi: float
    precision: float | None
    recall: float | None
    #: positives the arm called negative (what an adversary is looking for)
    false_negatives: int

    def cells(self) -> list[str]:
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        acc = "-" if self.accuracy is None else f"{self.accuracy:.3f} [{self.accuracy_lo:.2f}, {self.accuracy_hi:.2f}]"
        return [self.arm, acc, f(self.precision), f(self.recall), str(self.false_negatives), str(self.unscorable)]


COLUMNS = ("arm", "accuracy [95% CI]", "prec.", "recall", "missed", "unscorable")


def score_arm(arm: str, verdicts: list[Verdict], positive: list[bool]) -> ArmScore:
    """Accuracy (Wilson interval), precision and recall of ``fail`` = positive; an
    unscorable verdict counts as wrong for accuracy (a judge that cannot read an
    item did not classify it) and is reported apart."""
    if len(verdicts) != len(positive):
        raise ValueError(f"{len(verdicts)} verdicts for {len(positive)} items")
    pred = [v.label == "fail" for v in verdicts]
    scored = [v.label != "unscorable" for v in verdicts]
    correct = sum(1 for p, t, s in zip(pred, positive, scored) if s and p == t)
    tp = sum(1 for p, t, s in zip(pred, positive, scored) if s and p and t)
    fp = sum(1 for p, t, s in zip(pred, positive, scored) if s and p and not t)
    fn = sum(1 for p, t, s in zip(pred, positive, scored) if t and not (s and p))
    acc = rate(correct, len(verdicts))
    return ArmScore(
        arm=arm,
        n=len(verdicts),
        unscorable=sum(1 for s in scored if not s),
        accuracy=acc.rate,
        accuracy_lo=acc.low,
        accuracy_hi=acc.high,
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / (tp + fn) if tp + fn else None,
        false_negatives=fn,
    )


def auroc(scores: list[float | None], positive: list[bool]) -> float | None:
    """Area under the ROC curve of a judge's scores (unscorable items left out)."""
    pairs = [(s, t) for s, t in zip(scores, positive) if s is not None]
    if len({t for _, t in pairs}) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([t for _, t in pairs], [s for s, _ in pairs]))
