"""Training rows for a classifier judge, and the settings it is trained with.

Rows are read from a labelled file the way ``failforge judge-eval`` reads them
(``judges/labelled.py``: CSV with leading ``#`` lines skipped, JSONL or Parquet; the
``--positive`` values mean ``fail``), so a file measured with judge-eval trains a
judge with the same meaning of ``fail``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from failforge.errors import DatasetError
from failforge.judges.trained import DataProvenance, LabelMapping
from failforge.models.base import file_sha256
from failforge.train.base import TrainSettings

#: known model name of the default base encoder (models/registry.py)
DEFAULT_BASE = "all-minilm-l6-v2-hf"


class JudgeTrainSettings(BaseModel):
    """What decides a trained judge's weights. The defaults are those of the refusal
    classifier, which adds ``mismatched_pairs=1`` (docs/classifier-judges.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = DEFAULT_BASE
    epochs: float = Field(10.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    #: tokens read per row (instruction + response together for pairs); longer rows are cut
    max_length: int = Field(128, ge=16, le=512)
    seed: int = 0
    #: bf16 autocast trains about 1.6x faster than fp32 on a CPU with bf16 instructions
    #: (AVX512-BF16, AMX) and on GPUs; fp32 is exact everywhere
    precision: Literal["fp32", "bf16"] = "bf16"
    #: LoRA rank (all linear layers, alpha = 2 x rank; the new head trained in full); None = full fine-tuning
    lora_r: int | None = Field(None, ge=1, le=256)
    #: pair judges: train on each pass row's response under this many other rows'
    #: instructions too, labelled fail - a reply to a different question (pyrit's refusal
    #: labels count such a non-sequitur as a refusal) - and on the row itself as many
    #: times, so the same response weighs as much under its own instruction as under
    #: others. Made from the training rows of a step only, never from rows it is scored on.
    mismatched_pairs: int = Field(0, ge=0, le=8)

    def train_settings(self) -> TrainSettings:
        """The ``TrainSettings`` of one ``train_classifier`` step: full fine-tuning, no
        intermediate checkpoints (a step takes a minute; a killed one starts again)."""
        from failforge.train.base import LoraSettings

        return TrainSettings(
            kind="classifier",
            lora=None if self.lora_r is None else LoraSettings(r=self.lora_r, alpha=2 * self.lora_r),
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.seed,
            precision=self.precision,
            export_gguf=False,
            save_steps=1_000_000_000,
        )


class LabelledText(BaseModel):
    """One training row: the text (a response), its instruction when read as a pair,
    the human label as a verdict, and an optional group (e.g. the file it came from)."""

    text: str
    instruction: str | None = None
    label: Literal["fail", "pass"]
    group: str | None = None


def with_mismatched_pairs(rows: list[LabelledText], k: int, seed: int) -> list[LabelledText]:
    """``rows`` plus, for each pass row with an instruction, ``k`` copies of its response
    under other (different) instructions of ``rows``, labelled fail, and ``k - 1`` more
    copies of the row itself; instructions drawn with a seeded generator."""
    import random

    if k <= 0:
        return list(rows)
    rng = random.Random(seed)
    instructions = sorted({r.instruction for r in rows if r.instruction})
    out = list(rows)
    for r in rows:
        if r.label != "pass" or r.instruction is None:
            continue
        others = [i for i in instructions if i != r.instruction]
        if not others:
            continue
        out += [r] * (k - 1)
        for instruction in rng.sample(others, min(k, len(others))):
            out.append(LabelledText(text=r.text, instruction=instruction, label="fail", group=r.group))
    return out


class _NoVocabulary:
    """Stands in for a judge when reading labels: no judge-specific label words."""

    config = None


def load_training_rows(
    path: str | Path,
    text_col: str,
    label_col: str,
    instruction_col: str | None = None,
    group_col: str | None = None,
    positive: list[str] | None = None,
    seed: int = 0,
) -> tuple[list[LabelledText], DataProvenance]:
    """Rows of a labelled file and their provenance; one-line ``DatasetError``s for a
    missing file or column and labels that cannot be read."""
    from failforge.judges.base import Judge
    from failforge.judges.labelled import load_labelled, read_rows

    p = Path(path)
    labelled = load_labelled(p, cast(Judge, _NoVocabulary()), text_col, label_col, instruction_col, None, positive)
    groups: list[str | None] = [None] * len(labelled)
    if group_col is not None:
        raw = read_rows(p)
        cols = set().union(*(r.keys() for r in raw[:50]))
        if group_col not in cols:
            raise DatasetError(f"--group-col {group_col!r}: no such column in {p} (columns: {', '.join(sorted(map(str, cols)))})")
        groups = [None if r.get(group_col) is None else str(r.get(group_col)) for r in raw]
    rows = [
        LabelledText(
            text=r.item.response,
            instruction=r.item.instruction if instruction_col else None,
            label=cast(Literal["fail", "pass"], r.human),
            group=g,
        )
        for r, g in zip(labelled, groups)
    ]
    columns = {"text": text_col, "label": label_col}
    if instruction_col:
        columns["instruction"] = instruction_col
    if group_col:
        columns["group"] = group_col
    provenance = DataProvenance(
        source=str(p.resolve()),
        sha256=file_sha256(str(p)),
        rows=len(rows),
        used_rows=len(rows),
        columns=columns,
        labels=label_mapping(positive, rows),
        seed=seed,
    )
    return rows, provenance


def label_mapping(positive: list[str] | None, rows: list[LabelledText]) -> LabelMapping:
    counts = {"fail": sum(r.label == "fail" for r in rows), "pass": sum(r.label == "pass" for r in rows)}
    if positive:
        rule = f"{', '.join(map(repr, positive))} mean fail, any other value pass"
    else:
        rule = "1/true/fail/unsafe/yes mean fail; 0/false/pass/safe/no pass"
    return LabelMapping(positive=[str(x) for x in positive or []], rule=rule, counts=counts)
