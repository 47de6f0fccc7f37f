"""Train a classifier judge: fine-tune a small encoder on labelled rows, measure it,
and write the judge folder (``failforge judge train``).

Measuring:
- **held-out** (``heldout`` > 0): a stratified, seeded split; the saved classifier is
  the one trained on the rest, so the held-out figures are exactly its own;
- **cross-validation** (``cv`` = k): sklearn's ``StratifiedKFold`` (shuffled, seeded);
  each fold is trained from the base on the other k-1 folds and scores its own, so
  no row is ever scored by a model that trained on it.

Every step is ``train.classifier.train_classifier`` (transformers ``Trainer``) in a
hidden work folder next to the output; the output folder (a plain checkpoint plus
``failforge_judge.json``) is renamed into place only when everything succeeded, and
the work folder is removed either way.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from failforge.errors import DatasetError, FailforgeError
from failforge.judges.base import Judge
from failforge.judges.trained import LABELS, META_FILE, DataProvenance, FoldMetrics, TrainedJudgeMeta
from failforge.train.judge_data import JudgeTrainSettings, LabelledText, with_mismatched_pairs
from failforge.train.judge_metrics import compare_judge, cv_metrics, split_metrics

Progress = Callable[[str], None]
#: files of a trained checkpoint that the judge folder keeps
_KEEP = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def check_rows(rows: Sequence[LabelledText], label_col: str, cv: int | None, heldout: float) -> None:
    """Refuse, before anything is written, rows a classifier cannot be trained or measured on."""
    if not rows:
        raise DatasetError("no rows with text to classify")
    counts = {c: sum(r.label == c for r in rows) for c in ("fail", "pass")}
    if 0 in counts.values():
        only = "fail" if counts["fail"] else "pass"
        raise DatasetError(
            f"--label-col {label_col!r}: all {len(rows)} rows are {only}; a classifier needs both fail and pass rows "
            "(--positive says which values mean fail)"
        )
    if cv is not None:
        if cv < 2:
            raise DatasetError(f"--cv {cv}: cross-validation needs at least 2 folds")
        if len(rows) < cv:
            raise DatasetError(f"--cv {cv}: only {len(rows)} rows, fewer than the folds")
        small = min(counts, key=lambda c: counts[c])
        if counts[small] < cv:
            raise DatasetError(f"--cv {cv}: only {counts[small]} {small} rows, fewer than the folds (each fold needs one)")
    if not 0.0 <= heldout < 1.0:
        raise DatasetError(f"--heldout {heldout}: must be at least 0 and below 1")
    if heldout > 0:
        n_test = math.ceil(heldout * len(rows))
        if n_test < 2 or len(rows) - n_test < 2 or min(counts.values()) < 2:
            raise DatasetError(
                f"--heldout {heldout}: {len(rows)} rows ({counts['fail']} fail, {counts['pass']} pass) are too few for a "
                "stratified held-out split (each part needs a row of each class); use --heldout 0"
            )


def pair_of(row: LabelledText) -> dict[str, Any]:
    """A row as ``train_classifier`` reads it: the instruction first when read as a pair."""
    label = LABELS.index(row.label)
    if row.instruction is None:
        return {"text": row.text, "label": label}
    return {"text": row.instruction, "text_pair": row.text, "label": label}


def _inputs(rows: Sequence[LabelledText]) -> list[str | tuple[str, str]]:
    return [r.text if r.instruction is None else (r.instruction, r.text) for r in rows]


@contextmanager
def _quiet_transformers():
    """No "newly initialized weights" notices and friends: training a head is the point."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _epoch_callback(progress: Progress, name: str):
    from transformers import TrainerCallback

    class EpochLine(TrainerCallback):
        """One progress line per epoch: mean loss and seconds."""

        def __init__(self):
            self.t0 = time.perf_counter()
            self.losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_epoch_end(self, args, state, control, **kwargs):
            loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
            epochs = args.num_train_epochs
            progress(
                f"{name}: epoch {round(state.epoch or 0)}/{epochs:g} loss {loss:.4f} "
                f"({time.perf_counter() - self.t0:.0f} s)"
            )
            self.losses, self.t0 = [], time.perf_counter()

    return EpochLine()


class _Step:
    """Trains one classifier from the base in the work folder and scores rows with it."""

    def __init__(self, base, settings: JudgeTrainSettings, work: Path, progress: Progress):
        self.base, self.settings, self.work, self.progress = base, settings, work, progress

    def train(self, name: str, rows: Sequence[LabelledText]) -> Path:
        from failforge.train.classifier import train_classifier

        rows = with_mismatched_pairs(list(rows), self.settings.mismatched_pairs, self.settings.seed)
        version = train_classifier(
            self.base,
            [pair_of(r) for r in rows],
            self.settings.train_settings(),
            self.work / name,
            name=name,
            labels=list(LABELS),
            quiet=True,
            callbacks=[_epoch_callback(self.progress, name)],
        )
        return Path(version.checkpoint)

    def predict(self, checkpoint: Path, rows: Sequence[LabelledText]) -> list[str]:
        from failforge.judges.classifier import HFSequenceClassifier

        clf = HFSequenceClassifier(str(checkpoint), positive_label="fail", max_length=self.settings.max_length)
        return ["fail" if p >= 0.5 else "pass" for p in clf.predict_proba(_inputs(rows))]


def train_judge(
    rows: Sequence[LabelledText],
    data: DataProvenance,
    settings: JudgeTrainSettings,
    out_dir: str | Path,
    *,
    cache_root: Path,
    cv: int | None = None,
    heldout: float = 0.2,
    compare: Sequence[tuple[str, Judge]] = (),
    force: bool = False,
    label_col: str = "label",
    progress: Progress = lambda line: None,
) -> TrainedJudgeMeta:
    """Measure (held-out split, k folds), train, and write the judge folder ``out_dir``."""
    from failforge.judges.classifier import has_content

    out = Path(out_dir).expanduser()
    if out.exists() and not force:
        raise FailforgeError(f"-o {out}: already exists (--force replaces it)")
    kept = [r for r in rows if has_content(r.text)]
    check_rows(kept, label_col, cv, heldout)
    data = data.model_copy(update={"used_rows": len(kept), "skipped_rows": len(rows) - len(kept)})
    pair = kept[0].instruction is not None

    from failforge.models.registry import resolve_weights
    from failforge.train.checkpointing import atomic_dir, base_version, weights_hash

    base = base_version(resolve_weights(settings.base, cache_root), settings.base)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))
    t0 = time.perf_counter()
    try:
        with _quiet_transformers():
            step = _Step(base, settings, work, progress)
            cv_result = _cross_validate(step, kept, cv, settings.seed, progress) if cv else None
            final_rows, test_rows = _heldout_split(kept, heldout, settings.seed)
            checkpoint = step.train("final", final_rows)
            heldout_result = None
            if test_rows:
                heldout_result = split_metrics(test_rows, step.predict(checkpoint, test_rows))
                progress(f"held-out: accuracy {heldout_result.accuracy:.3f} on {len(test_rows)} rows")
        compared = [compare_judge(s, j, kept if cv else test_rows, "cv" if cv else "heldout") for s, j in compare if cv or test_rows]
        with atomic_dir(out) as tmp:
            for name in _KEEP:
                if (checkpoint / name).exists():
                    shutil.copy2(checkpoint / name, tmp / name)
            meta = TrainedJudgeMeta(
                fingerprint=weights_hash(tmp),
                base={"name": settings.base, "fingerprint": base.fingerprint},
                pair=pair,
                max_length=settings.max_length,
                data=data,
                settings=settings.model_dump(mode="json"),
                heldout=heldout_result,
                cv=cv_result,
                compared=compared,
                trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
                train_seconds=round(time.perf_counter() - t0, 1),
            )
            (tmp / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _heldout_split(rows: Sequence[LabelledText], heldout: float, seed: int):
    if heldout <= 0:
        return list(rows), []
    from sklearn.model_selection import train_test_split

    idx = list(range(len(rows)))
    train_idx, test_idx = train_test_split(
        idx, test_size=heldout, stratify=[r.label for r in rows], random_state=seed, shuffle=True
    )
    return [rows[i] for i in sorted(train_idx)], [rows[i] for i in sorted(test_idx)]


def _cross_validate(step: _Step, rows: Sequence[LabelledText], k: int, seed: int, progress: Progress):
    from sklearn.model_selection import StratifiedKFold

    labels = [r.label for r in rows]
    predicted: list[str] = [""] * len(rows)
    folds = []
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (train_idx, test_idx) in enumerate(splitter.split([[0]] * len(rows), labels), 1):
        name = f"fold-{i}-of-{k}"
        train_rows = [rows[j] for j in train_idx]
        test_rows = [rows[j] for j in test_idx]
        checkpoint = step.train(name, train_rows)
        got = step.predict(checkpoint, test_rows)
        for j, p in zip(test_idx, got):
            predicted[j] = p
        acc = sum(p == r.label for p, r in zip(got, test_rows)) / len(test_rows)
        folds.append(FoldMetrics(fold=i, train_rows=len(train_rows), test_rows=len(test_rows), accuracy=acc))
        progress(f"fold {i}/{k}: accuracy {acc:.3f} on {len(test_rows)} held-out rows")
        shutil.rmtree(step.work / name, ignore_errors=True)  # 90 MB a fold
    return cv_metrics(folds, rows, predicted)
