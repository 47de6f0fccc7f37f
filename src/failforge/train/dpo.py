"""Direct preference optimisation through TRL's DPOTrainer.

Rows are ``{"prompt", "chosen", "rejected"}``; a prompt is a string or a list of
messages, and chosen/rejected are strings (assistant replies) or assistant messages.
In ReverseGen the prompt is the proposer's few-shot prompt, ``chosen`` an
instruction that made the target fail and ``rejected`` one that did not.

The reference model is the previous version (``ref=None``) unless another is
given. With LoRA, a previous version that carries an adapter is first merged into
its weights (``plain_checkpoint``) and a fresh adapter is trained on top; TRL then
computes reference log-probabilities with the new adapter disabled, which is the
previous version exactly, without a second copy of the model in memory. Full
fine-tuning (``lora: null``) keeps a frozen copy as the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from failforge.errors import DatasetError
from failforge.run.store import RunStore
from failforge.train.base import ModelVersion, TrainSettings
from failforge.train.checkpointing import StepDir
from failforge.train.device import plan_device
from failforge.train.threads import run_threads
from failforge.train.sft import (
    chat,
    finish_causal,
    load_causal_lm,
    load_merged,
    lora_config,
    plain_checkpoint,
    reply,
    save_weights,
    text,
    trainer_args,
    weights_saved,
)

log = logging.getLogger("failforge.train")


def train_dpo(
    base: ModelVersion,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    out_dir: str | Path,
    store: RunStore | None = None,
    ref: ModelVersion | None = None,
    name: str | None = None,
    *,
    quiet: bool = False,
    callbacks: Sequence[Any] = (),
) -> ModelVersion:
    """Train ``base`` to prefer ``chosen`` over ``rejected`` (beta from settings)."""
    data = dpo_rows(rows)
    name = name or Path(out_dir).name
    separate_ref = ref is not None and ref.fingerprint != base.fingerprint
    step = StepDir(out_dir, "dpo", base, settings, data, extra={"ref": (ref or base).fingerprint})
    if (done := step.done()) is not None:
        log.info("%s: already trained in %s", name, step.root)
        return done
    step.claim()
    from failforge.train.callbacks import quiet_progress

    with quiet_progress(quiet):  # merging a parent adapter loads weights too
        checkpoint = plain_checkpoint(base, step)
    if not weights_saved(step, settings):
        with quiet_progress(quiet):
            from datasets import Dataset
            from trl import DPOConfig, DPOTrainer

            plan = plan_device(settings, threads=run_threads(store, log=log.info))
            plan.apply()
            model, tokenizer = load_causal_lm(checkpoint, plan, settings)
            ref_model = None
            if separate_ref:
                ref_model, _ = load_merged(ref.checkpoint, ref.adapter)
            elif settings.lora is None:
                ref_model, _ = load_causal_lm(checkpoint)  # full fine-tuning: a frozen copy of the previous version
            if ref_model is not None:
                ref_model.requires_grad_(False)
            args = DPOConfig(
                **trainer_args(settings, plan, step.trainer_dir, quiet),
                beta=settings.beta,
                max_length=settings.max_length,
            )
            trainer = DPOTrainer(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=Dataset.from_list(data),
                processing_class=tokenizer,
                peft_config=lora_config(settings, "CAUSAL_LM"),
            )
            if len(trainer.train_dataset) == 0:  # TRL drops rows longer than max_length
                raise DatasetError(
                    f"{name}: no training row fits in max_length={settings.max_length} tokens; raise the step's max_length"
                )
            step.train(trainer, name, store, quiet, callbacks)
            save_weights(trainer.model, tokenizer, step, settings)
            del trainer, model, ref_model
    with quiet_progress(quiet):  # the GGUF export loads the merged weights
        return finish_causal(step, base, settings, name, checkpoint)


def dpo_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate preference rows; all chat prompts or all plain-text prompts."""
    if not rows:
        raise DatasetError("dpo: no training rows")
    out: list[dict[str, Any]] = []
    forms: set[str] = set()
    for i, row in enumerate(rows):
        where = f"dpo row {i}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise DatasetError(f"{where}: missing {', '.join(missing)}")
        if isinstance(row["prompt"], str):
            item = {"prompt": row["prompt"]} | {k: text(row[k], f"{where}: {k}") for k in ("chosen", "rejected")}
            forms.add("text")
        else:
            item = {"prompt": chat(row["prompt"], f"{where}: prompt")}
            item |= {k: reply(row[k], f"{where}: {k}") for k in ("chosen", "rejected")}
            forms.add("chat")
        if item["chosen"] == item["rejected"]:
            raise DatasetError(f"{where}: chosen and rejected are the same")
        out.append(item)
    if len(forms) > 1:
        raise DatasetError("dpo: rows mix chat prompts and plain-text prompts; use one form for the whole set")
    return out
