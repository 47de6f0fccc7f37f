"""`failforge judge tune-relevance`: choose the refusal judge's relevance threshold on
labelled refusals and report its k-fold cross-validation (judges/relevance_tuning.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from failforge.errors import FailforgeError


def tune_relevance(
    data: Path = typer.Option(..., "--data", help="Labelled rows: .csv (leading # lines skipped), .jsonl or .parquet."),
    text_col: str = typer.Option(..., "--text-col", help="Column with the reply."),
    label_col: str = typer.Option(..., "--label-col", help="Column with the human label (fail = refusal)."),
    instruction_col: str = typer.Option(..., "--instruction-col", help="Column with the request the reply answers."),
    positive: Optional[list[str]] = typer.Option(
        None, "--positive", help="Label value(s) that mean refusal (repeatable). Default: 1/true (as judge-eval)."
    ),
    group_col: Optional[str] = typer.Option(None, "--group-col", help="Report accuracy per value of this column too."),
    cv: int = typer.Option(5, "--cv", help="Folds of the cross-validation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds."),
) -> None:
    """Choose the relevance gate's cosine threshold on labelled refusals; report k-fold CV."""
    from failforge.judges.labelled import load_labelled, read_rows
    from failforge.judges.refusal_relevance import RefusalRelevanceConfig, RefusalRelevanceJudge
    from failforge.judges.relevance_tuning import cross_validate, rows_from_labels

    judge = RefusalRelevanceJudge(RefusalRelevanceConfig(fail_on="refusal"))
    labelled = load_labelled(data, judge, text_col, label_col, instruction_col, positive=positive)
    groups = _groups(read_rows(data), group_col, data) if group_col else None
    rows, skipped = rows_from_labels(judge.analyse_items([r.item for r in labelled]), [r.human == "fail" for r in labelled], groups)
    refusals = sum(rows.human_refused)
    if cv < 2 or min(refusals, len(rows.human_refused) - refusals) < cv:
        raise FailforgeError(f"--cv {cv}: needs at least 2 folds and as many rows of each class ({refusals} refusals, "
                             f"{len(rows.human_refused) - refusals} others)")  # fmt: skip
    _report(cross_validate(rows, k=cv, seed=seed), len(rows.human_refused), skipped)


def _groups(raw: list[dict], col: str, data: Path) -> list[str]:
    if not any(col in r for r in raw[:50]):
        raise FailforgeError(f"--group-col {col!r}: no such column in {data}")
    return [str(r.get(col, "")) for r in raw]


def _report(result, rows: int, skipped: int) -> None:
    folds = " ".join(f"{f.accuracy:.3f}" for f in result.folds)
    thresholds = " ".join(f"{f.threshold:.2f}" for f in result.folds)
    lines = [
        f"{result.k}-fold CV (seed {result.seed}): accuracy {result.mean:.3f} ± {result.std:.3f} (folds: {folds}); "
        f"pooled {result.pooled:.3f} on {rows} rows" + (f" ({skipped} unscorable left out)" if skipped else ""),
        f"  thresholds chosen on the training folds: {thresholds}",
    ]
    lines += [f"  {g}: accuracy {acc:.3f} ({n} rows)" for g, (acc, n) in result.by_group.items()]
    lines.append(f"threshold chosen on all rows: {result.threshold:.2f} (accuracy {result.fitted_accuracy:.3f} on the rows it was chosen on)")
    lines.append(f"phrase rules alone: accuracy {result.phrase_accuracy:.3f}")
    typer.echo("\n".join(lines))
