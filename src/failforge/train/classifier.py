"""Sequence-classification fine-tuning (a judge that learns from its misses).

Rows are ``{"text": str, "label": str | int}``, optionally with ``"text_pair": str``
(every row or none): the two texts are then read as a pair (``[CLS] text [SEP]
text_pair [SEP]``), e.g. an instruction and its response. The checkpoint gets a fresh
classification head (transformers ``AutoModelForSequenceClassification``), LoRA
(with the head fully trained) or full fine-tuning, and plain ``transformers.Trainer``
(TRL has no classifier trainer). The result is saved as a plain checkpoint with
the adapter merged and ``id2label`` set, so ``judges.classifier.HFSequenceClassifier``
loads it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from failforge.errors import DatasetError
from failforge.run.store import RunStore
from failforge.train.base import ModelVersion, TrainSettings
from failforge.train.checkpointing import StepDir, atomic_dir
from failforge.train.device import plan_device
from failforge.train.threads import run_threads
from failforge.train.sft import lora_config, plain_checkpoint, trainer_args

log = logging.getLogger("failforge.train")


def train_classifier(
    base: ModelVersion,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    out_dir: str | Path,
    store: RunStore | None = None,
    name: str | None = None,
    labels: list[str] | None = None,
    *,
    quiet: bool = False,
    callbacks: Sequence[Any] = (),
) -> ModelVersion:
    """Fine-tune a classifier on ``rows``; ``labels`` fixes the class order (default: sorted labels seen)."""
    data, labels = classifier_rows(rows, labels)
    name = name or Path(out_dir).name
    step = StepDir(out_dir, "classifier", base, settings, data, extra={"labels": labels})
    if (done := step.done()) is not None:
        log.info("%s: already trained in %s", name, step.root)
        return done
    step.claim()
    checkpoint = plain_checkpoint(base, step)
    if not (step.model_dir / "config.json").exists():
        from failforge.train.callbacks import quiet_progress

        with quiet_progress(quiet):
            import torch
            from datasets import Dataset
            from transformers import (
                AutoModelForSequenceClassification,
                AutoTokenizer,
                DataCollatorWithPadding,
                Trainer,
                TrainingArguments,
                set_seed,
            )

            plan = plan_device(settings, threads=run_threads(store, log=log.info))
            plan.apply()
            set_seed(settings.seed)  # the new head is drawn before Trainer seeds anything
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForSequenceClassification.from_pretrained(
                str(checkpoint),
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                dtype=torch.float32,
            )
            # decoder-only classifiers read the last non-pad token, so the model must know the pad id
            model.config.pad_token_id = tokenizer.pad_token_id
            peft = lora_config(settings, "SEQ_CLS")
            if peft is not None:
                from peft import get_peft_model

                from failforge.train.dropout import use_gap_dropout
                from failforge.train.lora_forward import use_fused_lora

                model = get_peft_model(model, peft)  # SEQ_CLS also trains the new head in full
                use_gap_dropout(model)
                use_fused_lora(model)

            pairs = "text_pair" in data[0]

            def encode(batch):
                second = batch["text_pair"] if pairs else None
                return tokenizer(batch["text"], second, truncation=True, max_length=settings.max_length)

            text_cols = ["text", "text_pair"] if pairs else ["text"]
            dataset = Dataset.from_list(data).map(encode, batched=True, remove_columns=text_cols)
            trainer = Trainer(
                model=model,
                args=TrainingArguments(**trainer_args(settings, plan, step.trainer_dir, quiet)),
                train_dataset=dataset,
                data_collator=DataCollatorWithPadding(tokenizer),
                processing_class=tokenizer,
            )
            step.train(trainer, name, store, quiet, callbacks)
            trained = trainer.model
            if peft is not None:
                trained = trained.merge_and_unload()
            with atomic_dir(step.model_dir) as tmp:
                trained.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            del trainer, model, trained
    version = ModelVersion(
        name=name,
        checkpoint=str(step.model_dir),
        fingerprint=step.fingerprint(step.model_dir),
        parent=base.fingerprint,
    )
    return step.finish(version)


def classifier_rows(rows: list[dict[str, Any]], labels: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows as ``{"text", ["text_pair",] "label": class index}`` and the label names in class order."""
    if not rows:
        raise DatasetError("classifier: no training rows")
    pairs = isinstance(rows[0], dict) and "text_pair" in rows[0]
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "label" not in row:
            raise DatasetError(f"classifier row {i}: needs 'text' (a string) and 'label'")
        if pairs != ("text_pair" in row) or (pairs and not isinstance(row["text_pair"], str)):
            raise DatasetError(f"classifier row {i}: 'text_pair' (a string) must be in every row or in none")
        if isinstance(row["label"], bool) or not isinstance(row["label"], (str, int)):
            raise DatasetError(f"classifier row {i}: label must be a string or an integer class index")
    if labels is None:
        if any(isinstance(r["label"], int) for r in rows):
            raise DatasetError("classifier: integer labels need the label names (labels=[...]) to say what they mean")
        labels = sorted({r["label"] for r in rows})
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DatasetError(f"classifier: labels must be at least two distinct names, got {labels}")
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for i, row in enumerate(rows):
        label = row["label"]
        texts = {"text": row["text"], **({"text_pair": row["text_pair"]} if pairs else {})}
        if isinstance(label, int):
            if not 0 <= label < len(labels):
                raise DatasetError(f"classifier row {i}: label {label} is not a class index 0..{len(labels) - 1}")
            out.append({**texts, "label": label})
        elif label not in index:
            raise DatasetError(f"classifier row {i}: label {label!r} is not one of {labels}")
        else:
            out.append({**texts, "label": index[label]})
    return out, list(labels)
