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
fine-tuning (``lora: null``) keeps a frozen copy as the reference, unless the
reference is precomputed.

The reference is fixed for the step, so when the step visits more rows than there
are (``precompute_reference``), TRL's ``precompute_ref_log_probs`` scores each row
once before training instead of at every visit. Pairs are batched by length
(``batching.group_dpo_by_length``): TRL 1.16 has no padding-free DPO.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from failforge.errors import DatasetError
from failforge.run.store import RunStore
from failforge.train.base import ModelVersion, TrainSettings
from failforge.train.checkpointing import StepDir
from failforge.train.device import plan_device
from failforge.train.ranks import is_rank_zero
from failforge.train.threads import run_threads
from failforge.train.sft import (
    chat,
    finish_causal,
    load_causal_lm,
    load_merged,
    lora_config,
    open_step,
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
    threads: int | None = None,
) -> ModelVersion | None:
    """Train ``base`` to prefer ``chosen`` over ``rejected`` (beta from settings).

    Under ``accelerate launch`` only rank 0 returns the version (see ``train_sft``).
    """
    data = dpo_rows(rows)
    name = name or Path(out_dir).name
    separate_ref = ref is not None and ref.fingerprint != base.fingerprint
    step = StepDir(out_dir, "dpo", base, settings, data, extra={"ref": (ref or base).fingerprint})
    done, checkpoint = open_step(step, base, name, quiet)
    if done is not None:
        return done
    from failforge.train.callbacks import quiet_progress

    if not weights_saved(step, settings):
        from failforge.train.lm_head import labelled_positions_only
        from failforge.train.lm_head_fold import in_place_folds, narrow_cpu_tiles
        from failforge.train.lm_head_kept import kept_cpu_tiles

        # the reference pass runs in DPOTrainer(), so inside these contexts too
        with quiet_progress(quiet), labelled_positions_only(), in_place_folds(), kept_cpu_tiles(), narrow_cpu_tiles():
            from datasets import Dataset
            from trl import DPOConfig, DPOTrainer

            from failforge.train.batching import TokenCount, group_dpo_by_length
            from failforge.train.lora_forward import use_fused_lora
            from failforge.train.packing import pack_padded_batches, restore_attention, use_segment_attention

            plan = plan_device(
                settings, threads=threads or run_threads(store, log=log.info), checkpoint=checkpoint, sequences_per_row=2
            )
            plan.record(name, store, step.root)
            plan.apply()
            precompute, why = precompute_reference(settings, len(data))
            log.info("%s: reference log-probabilities %s (%s)", name, "computed once per row" if precompute else "computed at every step", why)
            model, tokenizer = load_causal_lm(checkpoint, plan, settings)
            # padded pairs run packed, each row attending to itself (the reference pass too)
            packed = use_segment_attention(model) and pack_padded_batches(model)
            ref_model = None
            if separate_ref:
                ref_model, _ = load_merged(ref.checkpoint, ref.adapter)
            elif settings.lora is None and not precompute:
                ref_model, _ = load_causal_lm(checkpoint)  # full fine-tuning: a frozen copy of the previous version
            # with LoRA the reference is the adapter-off model (no second copy); precomputed, TRL reads
            # the untrained model once before the first step, so full fine-tuning needs no copy either
            if ref_model is not None:
                ref_model.requires_grad_(False)
            args = DPOConfig(
                **trainer_args(settings, plan, step.trainer_dir, quiet),
                beta=settings.beta,
                max_length=settings.max_length,
                precompute_ref_log_probs=precompute,
                # no autograd in the reference pass: twice the training batch fits in the same memory
                precompute_ref_batch_size=2 * settings.batch_size,
            )
            with _no_tqdm(quiet):  # TRL's reference pass has its own progress bar
                trainer = DPOTrainer(
                    model=model,
                    ref_model=ref_model,
                    args=args,
                    # sorted by length, so the reference pass before training batches rows of similar length
                    train_dataset=Dataset.from_list(sorted(data, key=_approx_length)),
                    processing_class=tokenizer,
                    peft_config=lora_config(settings, "CAUSAL_LM"),
                )
            if len(trainer.train_dataset) == 0:  # TRL drops rows longer than max_length
                raise DatasetError(
                    f"{name}: no training row fits in max_length={settings.max_length} tokens; raise the step's max_length"
                )
            group_dpo_by_length(trainer, settings.seed)
            use_fused_lora(trainer.model)
            TokenCount(packed=packed).install(trainer)
            step.train(trainer, name, store, quiet, callbacks)
            if not trainer.is_world_process_zero():
                return None
            restore_attention(model)
            save_weights(trainer.model, tokenizer, step, settings)
            del trainer, model, ref_model
    elif not is_rank_zero():
        return None
    with quiet_progress(quiet):  # the GGUF export loads the merged weights
        return finish_causal(step, base, settings, name, checkpoint)


def precompute_reference(settings: TrainSettings, rows: int) -> tuple[bool, str]:
    """Whether TRL computes the reference log-probabilities once per row before training, and why.

    Computed at every step, the reference pass runs once per row visit; precomputed, once
    per row. Precomputing pays when the step visits more rows than there are (several
    epochs, or ``max_steps`` beyond one epoch); otherwise it would also score rows
    that a short step never reaches.
    """
    if settings.precompute_ref is not None:
        return settings.precompute_ref, f"train.precompute_ref: {str(settings.precompute_ref).lower()}"
    per_step = settings.batch_size * settings.gradient_accumulation_steps
    if settings.max_steps is not None:
        visits = settings.max_steps * per_step
    else:
        visits = int(settings.epochs * rows + 0.999)
    verdict = f"{visits} row visits, {rows} rows"
    return visits > rows, verdict


@contextmanager
def _no_tqdm(quiet: bool) -> Iterator[None]:
    """TRL's reference pass reads ``TQDM_DISABLE`` for its progress bar."""
    if not quiet:
        yield
        return
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _approx_length(row: dict[str, Any]) -> int:
    """Characters of the prompt and the longer answer: the order TRL's reference pass batches rows in."""

    def chars(x: Any) -> int:
        return len(x) if isinstance(x, str) else sum(len(m["content"]) for m in x)

    return chars(row["prompt"]) + max(chars(row["chosen"]), chars(row["rejected"]))


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
