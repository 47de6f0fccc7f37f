"""`failforge judge train`: fine-tune a small classifier judge on labelled rows,
measure it (held-out split, k-fold cross-validation), and write a judge folder that
``classifier:DIR`` loads (train/judge.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from failforge.cli.judge_relevance import tune_relevance
from failforge.errors import FailforgeError
from failforge.train.judge_data import JudgeTrainSettings

_D = JudgeTrainSettings()
_DEFAULTS_NOTE = "Defaults are the refusal classifier's settings, which add --mismatched-pairs 1."


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Trainable classifier judges; the refusal judge's relevance threshold.", no_args_is_help=True)
    group.command("train", help=f"Fine-tune a classifier judge on labelled rows. {_DEFAULTS_NOTE}")(train)
    group.command("tune-relevance")(tune_relevance)
    app.add_typer(group, name="judge")


def train(
    data: Path = typer.Option(..., "--data", help="Labelled rows: .csv (leading # lines skipped), .jsonl or .parquet."),
    text_col: str = typer.Option(..., "--text-col", help="Column with the text to classify (a response)."),
    label_col: str = typer.Option(..., "--label-col", help="Column with the human label."),
    out: Path = typer.Option(..., "--out", "-o", help="Judge folder to write (checkpoint + failforge_judge.json)."),
    instruction_col: Optional[str] = typer.Option(
        None, "--instruction-col", help="Column with the instruction: the classifier reads instruction + response as a pair."
    ),
    positive: Optional[list[str]] = typer.Option(
        None, "--positive", help="Label value(s) that mean fail (repeatable). Default: 1/true (as judge-eval)."
    ),
    group_col: Optional[str] = typer.Option(None, "--group-col", help="Report accuracy per value of this column too."),
    cv: Optional[int] = typer.Option(None, "--cv", help="k-fold cross-validation: k classifiers trained from the base."),
    heldout: float = typer.Option(0.2, "--heldout", help="Share of rows held out (stratified); 0 trains on all rows."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=f"Training epochs (default {_D.epochs:g})."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help=f"Learning rate (default {_D.learning_rate:g})."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Rows per step (default {_D.batch_size})."),
    max_length: Optional[int] = typer.Option(
        None, "--max-length", help=f"Tokens read per row, both texts of a pair together (default {_D.max_length})."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help=f"Seed of the split, the folds and training (default {_D.seed})."
    ),
    mismatched_pairs: Optional[int] = typer.Option(
        None,
        "--mismatched-pairs",
        help="Pairs: also train on each pass row's response under K other instructions, as fail (default 0).",
    ),
    precision: Optional[str] = typer.Option(None, "--precision", help=f"fp32 or bf16 (autocast) (default {_D.precision})."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank; default full fine-tuning."),
    base: Optional[str] = typer.Option(
        None, "--base", help=f"Base encoder: a known model name or a checkpoint folder (default {_D.base})."
    ),
    compare: Optional[list[str]] = typer.Option(
        None, "--compare", help="Also score this judge on the same rows, e.g. refusal:refusal,method=phrases (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace the output folder if it exists."),
) -> None:
    """Fine-tune a classifier judge on labelled rows and report its held-out and CV accuracy."""
    from pydantic import ValidationError

    from failforge.cli.state import state
    from failforge.judges.refusal_classifier import default_cache_root
    from failforge.train.judge import train_judge
    from failforge.train.judge_data import load_training_rows

    given = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "max_length": max_length,
             "seed": seed, "mismatched_pairs": mismatched_pairs, "precision": precision, "lora_r": lora_r,
             "base": base}  # fmt: skip
    flags = {"learning_rate": "lr"}
    try:
        settings = JudgeTrainSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0])
        raise FailforgeError(f"--{flags.get(name, name).replace('_', '-')}: {err['msg']}") from e
    if settings.mismatched_pairs and not instruction_col:
        raise FailforgeError("--mismatched-pairs pairs responses with other instructions: it needs --instruction-col")
    cache_root = default_cache_root(os.environ)
    judges = _compare_judges(compare or [], cache_root)
    rows, provenance = load_training_rows(data, text_col, label_col, instruction_col, group_col, positive, settings.seed)

    def progress(line: str) -> None:
        if not state.quiet:
            print(line, file=sys.stderr, flush=True)

    progress(
        f"training on {len(rows)} rows of {data} from {settings.base}: {settings.epochs:g} epochs, "
        f"{'instruction + response pairs' if instruction_col else 'one text'}, max {settings.max_length} tokens"
        + (f", {cv}-fold CV" if cv else "") + (f", {heldout:g} held out" if heldout else "")
    )
    meta = train_judge(
        rows, provenance, settings, out, cache_root=cache_root, cv=cv, heldout=heldout, compare=judges,
        force=force, label_col=label_col, progress=progress,
    )  # fmt: skip
    _report(meta, out)


def _compare_judges(specs: list[str], cache_root: Path):
    from failforge.judges.registry import build_judge, parse_judge

    return [(s, build_judge(parse_judge(s), cache_root=cache_root)) for s in specs]


def _report(meta, out: Path) -> None:
    lines = [f"judge written: {out} (weights {meta.version}, {meta.train_seconds:.0f} s)"]
    if meta.heldout is not None:
        h = meta.heldout
        lines.append(f"held-out: accuracy {h.accuracy:.3f} precision {h.precision:.3f} recall {h.recall:.3f} F1 {h.f1:.3f} ({h.rows} rows)")
        lines += [f"  {g}: accuracy {m.accuracy:.3f} ({m.rows} rows)" for g, m in h.by_group.items()]
    if meta.cv is not None:
        c = meta.cv
        folds = " ".join(f"{f.accuracy:.3f}" for f in c.folds)
        lines.append(f"{c.k}-fold CV: accuracy {c.mean:.3f} ± {c.std:.3f} (folds: {folds}); pooled {c.pooled.accuracy:.3f} on {c.pooled.rows} rows")
        lines += [f"  {g}: accuracy {m.accuracy:.3f} ({m.rows} rows)" for g, m in c.pooled.by_group.items()]
    for j in meta.compared:
        acc = "-" if j.accuracy is None else f"{j.accuracy:.3f}"
        lines.append(f"compared {j.spec} ({j.judge}@{j.judge_version}): accuracy {acc} on {j.scored} of {j.rows} rows")
        lines += [f"  {g}: accuracy {m.accuracy:.3f} ({m.rows} rows)" for g, m in j.by_group.items()]
    lines.append(f"use it as --judge classifier:{out}")
    typer.echo("\n".join(lines))
