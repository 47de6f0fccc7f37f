"""Measuring a judge against human labels (``failforge judge-eval``).

Rows come from CSV (leading ``#`` comment lines skipped), JSONL or Parquet. Each
human label is mapped to the judge's verdict space: ``fail`` or ``pass``. Numbers
and booleans: the values in ``positive`` are ``fail`` (default 1 / true). Words:
``positive`` lists the words that mean ``fail`` (when every ``positive`` value is a
number, a label that is not a number is an error rather than ``pass``); without
it, the judge's own vocabulary is used when it has one (the refusal judge knows
"refusal" and "compliance" and which of them its ``fail_on`` makes a failure).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from failforge.errors import DatasetError
from failforge.judges.base import Judge, JudgeInput, Label, Verdict
from failforge.run.inputs import note_file

REFUSAL_WORDS = {"refusal", "refused", "refuse", "reject", "rejected", "declined", "decline"}
COMPLIANCE_WORDS = {"compliance", "complied", "comply", "compliant", "accepted", "answered"}


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--data {p}: no such file")
    note_file("judge data", p)
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        text = p.read_text(encoding="utf-8-sig")
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        raise DatasetError(f"--data {p}: line {n} is not JSON ({e})") from e
            return rows
        if suffix in (".csv", ".tsv"):
            lines = text.splitlines(keepends=True)
            skip = 0
            while skip < len(lines) and lines[skip].lstrip().startswith("#"):
                skip += 1
            return list(csv.DictReader(io.StringIO("".join(lines[skip:])), delimiter="\t" if suffix == ".tsv" else ","))
    except DatasetError:
        raise
    except UnicodeDecodeError as e:
        raise DatasetError(f"--data {p}: invalid UTF-8 at byte {e.start}") from None
    except Exception as e:  # a corrupt file: name it, on one line
        raise DatasetError(f"--data {p}: cannot read ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from e
    raise DatasetError(f"--data {p}: unsupported file type {suffix or '(none)'} (use .csv, .jsonl or .parquet)")


def _norm(value: Any) -> tuple[str, float | None]:
    """A label as text ("1.0" -> "1", True -> "1") and its numeric value, if any."""
    if isinstance(value, bool):
        value = int(value)
    text = str(value).strip().lower() if value is not None else ""
    try:
        num = float(text)
        return (str(int(num)) if num.is_integer() else text), num
    except ValueError:
        return text, None


def _label_of(value: Any, positive: set[str] | None, judge: Judge, row: int, col: str) -> Label:
    text, num = _norm(value)
    if text == "":
        raise DatasetError(f"--label-col {col!r}: row {row} has no label")
    if positive:
        if text in positive:
            return "fail"
        if num is None and all(_norm(p)[1] is not None for p in positive):
            # "--positive 1" and a label "n/a": a typo must not silently become "pass"
            raise DatasetError(f"--label-col {col!r}: row {row} has {value!r}, not a number like the --positive values")
        return "pass"
    if num is not None:
        if text not in ("0", "1"):
            raise DatasetError(f"--label-col {col!r}: row {row} has {value!r}; give --positive for labels other than 0/1")
        return "fail" if text == "1" else "pass"
    if text in ("fail", "failure", "true", "yes", "unsafe", "pass", "false", "no", "safe"):
        return "fail" if text in ("fail", "failure", "true", "yes", "unsafe") else "pass"
    fail_on = getattr(getattr(judge, "config", None), "fail_on", None)
    if fail_on and text in REFUSAL_WORDS | COMPLIANCE_WORDS:
        refused = text in REFUSAL_WORDS
        return "fail" if refused == (fail_on == "refusal") else "pass"
    raise DatasetError(f"--label-col {col!r}: row {row} has {value!r}; say which labels mean fail with --positive")


class LabelledRow(BaseModel):
    row: int
    item: JudgeInput
    human: Label


def load_labelled(
    path: str | Path,
    judge: Judge,
    text_col: str = "response",
    label_col: str = "label",
    instruction_col: str | None = None,
    reference_col: str | None = None,
    positive: list[str] | None = None,
) -> list[LabelledRow]:
    rows = read_rows(path)
    if not rows:
        raise DatasetError(f"--data {path}: no rows")
    cols = set().union(*(r.keys() for r in rows[:50]))
    for flag, col in (("--text-col", text_col), ("--label-col", label_col), ("--instruction-col", instruction_col), ("--reference-col", reference_col)):
        if col is not None and col not in cols:
            raise DatasetError(f"{flag} {col!r}: no such column in {path} (columns: {', '.join(sorted(map(str, cols)))})")
    pos = {_norm(p)[0] for p in positive} if positive else None
    out = []
    for n, r in enumerate(rows, 1):
        text = r.get(text_col)
        responses = [str(x) for x in text] if isinstance(text, list) else ["" if text is None else str(text)]
        item = JudgeInput(
            instruction=str(r.get(instruction_col) or "") if instruction_col else "",
            responses=responses,
            reference=r.get(reference_col) if reference_col else None,
            meta={"row": n},
        )
        out.append(LabelledRow(row=n, item=item, human=_label_of(r.get(label_col), pos, judge, n, label_col)))
    return out


class JudgeScores(BaseModel):
    """A judge's scores on one labelled data file (fail = the positive class)."""

    judge: str
    judge_version: str
    data: str
    rows: int
    scored: int
    unscorable: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    #: rows = human label, columns = judge verdict; keys "fail"/"pass", plus "unscorable" columns
    confusion: dict[str, dict[str, int]]


class JudgeEvalReport(JudgeScores):
    mistakes: list[dict[str, Any]]


def evaluate(judge: Judge, rows: list[LabelledRow], data: str = "") -> tuple[JudgeEvalReport, list[Verdict]]:
    """Judge every row and compare with the human label. ``fail`` is the positive class;
    accuracy, precision, recall and F1 are over scored rows, unscorable ones counted apart."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    verdicts = judge.judge([r.item for r in rows])
    confusion = {h: {v: 0 for v in ("fail", "pass", "unscorable")} for h in ("fail", "pass")}
    y_true, y_pred, mistakes = [], [], []
    for r, v in zip(rows, verdicts):
        confusion[r.human][v.label] += 1
        if v.label == "unscorable":
            continue
        y_true.append(r.human == "fail")
        y_pred.append(v.label == "fail")
        if v.label != r.human:
            mistakes.append(
                {
                    "row": r.row,
                    "human": r.human,
                    "judge": v.label,
                    "score": v.score,
                    "reason": v.reason,
                    "instruction": r.item.instruction[:200],
                    "text": r.item.response[:300],
                }
            )
    if y_true:
        p, rc, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
        acc = float(accuracy_score(y_true, y_pred))
    else:
        p = rc = f1 = acc = None
    report = JudgeEvalReport(
        judge=judge.id,
        judge_version=judge.version,
        data=data,
        rows=len(rows),
        scored=len(y_true),
        unscorable=len(rows) - len(y_true),
        accuracy=acc,
        precision=None if p is None else float(p),
        recall=None if rc is None else float(rc),
        f1=None if f1 is None else float(f1),
        confusion=confusion,
        mistakes=mistakes,
    )
    return report, verdicts
