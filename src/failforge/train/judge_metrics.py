"""Scores of a trained judge on rows it did not train on: a split, the k folds, and
another judge on the same rows. ``fail`` is the positive class, as in judge-eval."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from failforge.judges.base import Judge, JudgeInput
from failforge.judges.trained import ComparedJudge, CVMetrics, FoldMetrics, GroupMetrics, SplitMetrics
from failforge.train.judge_data import LabelledText

Verdict2 = str  # "fail" | "pass"


def by_group(rows: Sequence[LabelledText], predicted: Sequence[Verdict2 | None]) -> dict[str, GroupMetrics]:
    """Accuracy per group over the rows with a prediction (None: not scored)."""
    out: dict[str, GroupMetrics] = {}
    names = sorted({r.group for r in rows if r.group is not None})
    for name in names:
        pairs = [(r.label, p) for r, p in zip(rows, predicted) if r.group == name and p is not None]
        if pairs:
            out[name] = GroupMetrics(rows=len(pairs), accuracy=sum(h == p for h, p in pairs) / len(pairs))
    return out


def split_metrics(rows: Sequence[LabelledText], predicted: Sequence[Verdict2]) -> SplitMetrics:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_true = [r.label == "fail" for r in rows]
    y_pred = [p == "fail" for p in predicted]
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    confusion = {h: {p: 0 for p in ("fail", "pass")} for h in ("fail", "pass")}
    for r, p in zip(rows, predicted):
        confusion[r.label][p] += 1
    return SplitMetrics(
        rows=len(rows),
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        confusion=confusion,
        by_group=by_group(rows, predicted),
    )


def cv_metrics(folds: list[FoldMetrics], rows: Sequence[LabelledText], out_of_fold: Sequence[Verdict2]) -> CVMetrics:
    accs = [f.accuracy for f in folds]
    return CVMetrics(
        k=len(folds),
        mean=statistics.fmean(accs),
        std=statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        folds=folds,
        pooled=split_metrics(rows, out_of_fold),
    )


def compare_judge(spec: str, judge: Judge, rows: Sequence[LabelledText], rows_from: str) -> ComparedJudge:
    """Another judge's verdicts on the same rows (its unscorable rows are left out)."""
    items = [JudgeInput(instruction=r.instruction or "", responses=[r.text]) for r in rows]
    verdicts = judge.judge(items)
    predicted: list[Verdict2 | None] = [v.label if v.label != "unscorable" else None for v in verdicts]
    scored = [(r.label, p) for r, p in zip(rows, predicted) if p is not None]
    return ComparedJudge(
        spec=spec,
        judge=judge.id,
        judge_version=judge.version,
        rows_from=rows_from,  # type: ignore[arg-type]
        rows=len(rows),
        scored=len(scored),
        accuracy=(sum(h == p for h, p in scored) / len(scored)) if scored else None,
        by_group=by_group(rows, predicted),
    )
