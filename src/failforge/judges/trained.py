"""What ``failforge judge train`` writes next to a trained classifier: ``failforge_judge.json``.

A trained judge folder is a plain transformers sequence-classification checkpoint
(so ``hf:DIR`` loads it like any other) plus this record: the weights' fingerprint,
the base model, where the training data came from and how its labels were read,
the settings, and the held-out and cross-validation measurements. The registry
reads it so that ``classifier:DIR`` scores the right class (``fail``) of the right
text (the response, or instruction + response as a pair) at the trained length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from failforge.errors import ConfigError

META_FILE = "failforge_judge.json"
FORMAT = "failforge-judge/1"
#: class names of every trained judge, in class-index order; ``fail`` is the positive class
LABELS = ("pass", "fail")


class LabelMapping(BaseModel):
    """How the human labels were read (as ``failforge judge-eval`` reads them)."""

    #: the label values that mean ``fail`` (``--positive``); empty = the default reading
    positive: list[str] = Field(default_factory=list)
    rule: str
    counts: dict[str, int]


class DataProvenance(BaseModel):
    """Where the training rows came from."""

    #: a file path, or a catalogue dataset ("pyrit==1.1.0: .../refusal.csv, ...")
    source: str
    sha256: str
    rows: int
    #: rows trained on or measured (rows with no text to classify are skipped)
    used_rows: int
    skipped_rows: int = 0
    #: role -> column name: text, label, instruction, group
    columns: dict[str, str]
    labels: LabelMapping
    #: seed of the held-out split and the folds
    seed: int
    package: str | None = None
    licence: str | None = None


class GroupMetrics(BaseModel):
    rows: int
    accuracy: float


class SplitMetrics(BaseModel):
    """A classifier's predictions on rows it was not trained on, against the human labels."""

    rows: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    #: rows = human label, columns = prediction
    confusion: dict[str, dict[str, int]]
    #: per value of the group column (e.g. which file a row came from)
    by_group: dict[str, GroupMetrics] = Field(default_factory=dict)


class FoldMetrics(BaseModel):
    fold: int
    train_rows: int
    test_rows: int
    accuracy: float


class CVMetrics(BaseModel):
    """k-fold cross-validation: each fold trained from the base, never on its test rows."""

    k: int
    mean: float
    std: float
    folds: list[FoldMetrics]
    #: all out-of-fold predictions pooled (each row predicted once, by the fold that held it out)
    pooled: SplitMetrics


class ComparedJudge(BaseModel):
    """Another judge scored on the same rows (``--compare``), for reference."""

    spec: str
    judge: str
    judge_version: str
    #: "cv": every row; "heldout": the held-out rows
    rows_from: Literal["cv", "heldout"]
    rows: int
    scored: int
    accuracy: float | None
    by_group: dict[str, GroupMetrics] = Field(default_factory=dict)


class TrainedJudgeMeta(BaseModel):
    """The record ``failforge_judge.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["failforge-judge/1"] = FORMAT
    #: sha256 of the trained weights (train/checkpointing.weights_hash)
    fingerprint: str
    #: known model name or checkpoint path, and its weights' fingerprint
    base: dict[str, str]
    labels: list[str] = Field(default_factory=lambda: list(LABELS))
    positive_label: str = "fail"
    #: True: the classifier reads instruction and response as a text pair
    pair: bool
    max_length: int
    data: DataProvenance
    #: the training settings (``JudgeTrainSettings``)
    settings: dict[str, Any]
    heldout: SplitMetrics | None = None
    cv: CVMetrics | None = None
    compared: list[ComparedJudge] = Field(default_factory=list)
    trained_at: str
    train_seconds: float

    @property
    def version(self) -> str:
        """Short id of the weights, for judge versions and store keys."""
        return self.fingerprint[:16]


def is_trained_judge(folder: str | Path) -> bool:
    return (Path(folder).expanduser() / META_FILE).is_file()


def read_meta(folder: str | Path) -> TrainedJudgeMeta:
    path = Path(folder).expanduser() / META_FILE
    try:
        return TrainedJudgeMeta.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from e
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "file"
        raise ConfigError(f"{path}: not a trained judge record ({where}: {err['msg']})") from e
