"""The evaluate stage: arms (trained, baselines, controls) scored on the same held-out
items, each rate with its Wilson interval, in one comparison table.

Here an arm is a judge whose ``fail`` verdicts are predictions of a positive class
(e.g. "problematic"); ``score_arm`` compares them with the true classes.
"""

from __future__ import annotations

from pydantic import BaseModel

from failforge.judges.base import Verdict
from failforge.metrics.rates import rate


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
