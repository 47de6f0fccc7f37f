"""`failforge judge-eval`: measure a judge against human labels, and with ``--save``
keep the result where runs and reports find it (judges/measured.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from failforge.errors import FailforgeError


def register(app: typer.Typer) -> None:
    app.command("judge-eval")(judge_eval)


def judge_eval(
    judge: str = typer.Option(..., "--judge", help="Judge: refusal, classifier:profanity, math, llm:harmless,... or a YAML file."),
    data: Path = typer.Option(..., "--data", help="Labelled rows: .csv (leading # lines skipped), .jsonl or .parquet."),
    text_col: str = typer.Option("response", "--text-col", help="Column with the text the judge scores."),
    label_col: str = typer.Option("label", "--label-col", help="Column with the human label."),
    instruction_col: Optional[str] = typer.Option(None, "--instruction-col", help="Column with the instruction, if any."),
    reference_col: Optional[str] = typer.Option(None, "--reference-col", help="Column with the reference (math)."),
    positive: Optional[list[str]] = typer.Option(
        None, "--positive", help="Label value(s) that mean the judge should say fail (repeatable). Default: 1/true."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also save the JSON report to this file."),
    show: int = typer.Option(20, "--show", help="Mistakes to list in the table (all go to --json/--out)."),
    save: bool = typer.Option(
        False, "--save", help="Save the result keyed by judge id, version and data sha256, for runs and reports."
    ),
    store: Optional[Path] = typer.Option(
        None, "--store", help="Where --save writes (default $FAILFORGE_JUDGE_EVALS or ~/.cache/failforge/judge-evals)."
    ),
) -> None:
    """Accuracy, precision, recall, F1 and the confusion matrix of a judge on human labels (fail = positive)."""
    from failforge.judges.labelled import evaluate, load_labelled
    from failforge.judges.measured import default_store_dir, save_result
    from failforge.judges.registry import build_judge, parse_judge

    if store is not None and not save:
        raise FailforgeError("--store only says where --save writes: add --save")
    j = build_judge(parse_judge(judge))
    rows = load_labelled(data, j, text_col, label_col, instruction_col, reference_col, positive)
    report, verdicts = evaluate(j, rows, data=str(data))
    if report.scored == 0:
        why = verdicts[0].reason if verdicts else "no rows"
        raise FailforgeError(f"--data {data}: the judge could score none of {report.rows} rows (first: {why})")
    payload = report.model_dump_json(indent=2)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(payload)
        except OSError as e:
            raise FailforgeError(f"--out {out}: {e.strerror or e}") from e
    saved = save_result(report, data, judge, store if store is not None else default_store_dir(os.environ)) if save else None
    if as_json:
        typer.echo(payload)
    else:
        _print(report, show)
    if saved is not None:
        typer.echo(f"saved: {saved}", err=as_json)  # --json keeps stdout pure JSON


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print(report, show: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{report.judge}[/] v{report.judge_version} on {report.data}: {report.rows} rows, "
        f"{report.scored} scored, {report.unscorable} unscorable"
    )
    t = Table(title="metrics (fail = positive)")
    for name in ("accuracy", "precision", "recall", "F1"):
        t.add_column(name, justify="right")
    t.add_row(_fmt(report.accuracy), _fmt(report.precision), _fmt(report.recall), _fmt(report.f1))
    console.print(t)
    c = Table(title="confusion (rows: human, columns: judge)")
    c.add_column("human")
    for v in ("fail", "pass", "unscorable"):
        c.add_column(v, justify="right")
    for h in ("fail", "pass"):
        c.add_row(h, *(str(report.confusion[h][v]) for v in ("fail", "pass", "unscorable")))
    console.print(c)
    if report.mistakes and show > 0:
        m = Table(title=f"mistakes ({min(show, len(report.mistakes))} of {len(report.mistakes)})")
        for col in ("row", "human", "judge", "reason", "text"):
            m.add_column(col, overflow="fold")
        for x in report.mistakes[:show]:
            m.add_row(str(x["row"]), x["human"], x["judge"], x["reason"][:60], " ".join(x["text"].split())[:100])
        console.print(m)
