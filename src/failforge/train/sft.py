"""Supervised fine-tuning through TRL's SFTTrainer (LoRA by default, full with ``lora: null``).

Rows are either ``{"messages": [...]}`` (the last turn must be the assistant's; the
loss is on that turn only) or ``{"prompt": ..., "completion": ...}`` (loss on the
completion only), where a prompt is a string or a list of messages. ReverseGen's
warm-up uses the second form: a few-shot prompt, the target instruction as the
completion.

``messages`` rows become conversational prompt-completion rows (everything before
the last assistant turn is the prompt), so TRL's completion-only loss masks them
with any chat template. TRL's ``assistant_only_loss`` needs ``{% generation %}``
markers that most shipped templates (SmolLM2's among them) lack. Earlier
assistant turns of a multi-turn row are context, not targets.

This module also holds the pieces that every causal-LM step shares (loading,
LoRA config, TRL arguments, saving, GGUF export, the finished version); ``dpo``
reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from failforge.errors import DatasetError
from failforge.models.base import Message
from failforge.run.store import RunStore
from failforge.train.base import ModelVersion, TrainSettings
from failforge.train.checkpointing import StepDir, atomic_dir
from failforge.train.device import DevicePlan, plan_device
from failforge.train.ranks import is_rank_zero, main_process_first, world_size
from failforge.train.threads import run_threads

log = logging.getLogger("failforge.train")


def train_sft(
    base: ModelVersion,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    out_dir: str | Path,
    store: RunStore | None = None,
    name: str | None = None,
    *,
    quiet: bool = False,
    callbacks: Sequence[Any] = (),
    threads: int | None = None,
) -> ModelVersion | None:
    """Fine-tune ``base`` on ``rows``; returns the new version (re-running a finished step returns it again).

    Under ``accelerate launch`` every rank calls this; only rank 0 saves, exports and
    returns the version, the others return None.
    """
    data = sft_rows(rows)
    name = name or Path(out_dir).name
    step = StepDir(out_dir, "sft", base, settings, data)
    done, checkpoint = open_step(step, base, name, quiet)
    if done is not None:
        return done
    from failforge.train.callbacks import quiet_progress

    if not weights_saved(step, settings):
        from failforge.train.lm_head import labelled_positions_only
        from failforge.train.lm_head_fold import in_place_folds, narrow_cpu_tiles
        from failforge.train.lm_head_kept import kept_cpu_tiles

        with quiet_progress(quiet), labelled_positions_only(), in_place_folds(), kept_cpu_tiles(), narrow_cpu_tiles():
            from datasets import Dataset
            from trl import SFTConfig, SFTTrainer

            from failforge.train.batching import TokenCount, make_padding_free
            from failforge.train.dropout import use_gap_dropout
            from failforge.train.lora_forward import use_fused_lora
            from failforge.train.packing import restore_attention, use_segment_attention

            plan = plan_device(settings, threads=threads or run_threads(store, log=log.info), checkpoint=checkpoint)
            plan.record(name, store, step.root)
            plan.apply()
            model, tokenizer = load_causal_lm(checkpoint, plan, settings)
            use_segment_attention(model)  # a padding-free batch attends within each row only
            args = SFTConfig(
                **trainer_args(settings, plan, step.trainer_dir, quiet),
                max_length=settings.max_length,
                completion_only_loss=True,
            )
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(data),
                processing_class=tokenizer,
                peft_config=lora_config(settings, "CAUSAL_LM"),
            )
            if len(trainer.train_dataset) == 0:  # TRL drops rows longer than max_length
                raise DatasetError(
                    f"{name}: no training row fits in max_length={settings.max_length} tokens; raise the step's max_length"
                )
            make_padding_free(trainer)
            use_gap_dropout(trainer.model)
            use_fused_lora(trainer.model)
            TokenCount().install(trainer)
            step.train(trainer, name, store, quiet, callbacks)
            if not trainer.is_world_process_zero():
                return None
            restore_attention(model)
            save_weights(trainer.model, tokenizer, step, settings)
            del trainer, model
    elif not is_rank_zero():
        return None
    with quiet_progress(quiet):  # the GGUF export loads the merged weights
        return finish_causal(step, base, settings, name, checkpoint)


# --- rows -------------------------------------------------------------------------
def sft_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate and normalise SFT rows into one prompt-completion form (chat or plain text)."""
    if not rows:
        raise DatasetError("sft: no training rows")
    out: list[dict[str, Any]] = []
    forms: set[str] = set()
    for i, row in enumerate(rows):
        where = f"sft row {i}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected an object, got {type(row).__name__}")
        if "messages" in row:
            msgs = chat(row["messages"], f"{where}: messages")
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise DatasetError(f"{where}: messages must end with an assistant turn after at least one other turn")
            out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
            forms.add("chat")
        elif "prompt" in row and "completion" in row:
            prompt, completion = row["prompt"], row["completion"]
            if isinstance(prompt, str):
                out.append({"prompt": prompt, "completion": text(completion, f"{where}: completion")})
                forms.add("text")
            else:
                out.append({"prompt": chat(prompt, f"{where}: prompt"), "completion": reply(completion, f"{where}: completion")})
                forms.add("chat")
        else:
            raise DatasetError(f"{where}: needs 'messages', or 'prompt' and 'completion' (has {sorted(row)})")
    if len(forms) > 1:
        raise DatasetError("sft: rows mix chat prompts and plain-text prompts; use one form for the whole set")
    return out


def chat(value: Any, where: str) -> list[dict[str, str]]:
    """A non-empty list of messages, as plain dicts."""
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: expected a non-empty list of messages")
    try:
        return [(m if isinstance(m, Message) else Message.model_validate(m)).model_dump() for m in value]
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise DatasetError(f"{where}: bad message ({loc}: {first['msg']})") from None


def reply(value: Any, where: str) -> list[dict[str, str]]:
    """An assistant answer: a string becomes one assistant message."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    msgs = chat(value, where)
    if any(m["role"] != "assistant" for m in msgs):
        raise DatasetError(f"{where}: only assistant messages can be trained on")
    return msgs


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}: expected a string next to a string prompt, got {type(value).__name__}")
    return value


# --- shared causal-LM pieces ----------------------------------------------------------
def trainer_args(settings: TrainSettings, plan: DevicePlan, output_dir: Path, quiet: bool) -> dict[str, Any]:
    """``TrainingArguments`` fields from the step's settings and device plan."""
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.per_process_batch(),
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        seed=settings.seed,
        data_seed=settings.seed,
        # every step's loss goes to the run store
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.checkpoint_every(),
        # two, so the previous checkpoint survives a kill while the next one is written
        save_total_limit=2,
        report_to="none",
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        **plan.trainer_kwargs(),
        # several processes on CPUs talk over gloo (NCCL is for GPUs)
        **({"ddp_backend": "gloo"} if plan.device == "cpu" and world_size() > 1 else {}),
    )


def lora_config(settings: TrainSettings, task_type: str):
    if settings.lora is None:
        return None
    from peft import LoraConfig

    lora = settings.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )


def load_causal_lm(checkpoint: str | Path, plan: DevicePlan | None = None, settings: TrainSettings | None = None):
    """Model + tokenizer from a plain checkpoint folder (float32 unless a GPU trains LoRA in bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32
    if plan is not None and plan.bf16 and settings is not None and settings.lora is not None:
        dtype = torch.bfloat16  # frozen base in bf16; PEFT keeps the adapter in fp32
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    return model, tokenizer


def load_merged(checkpoint: str | Path, adapter: str | Path | None):
    """A causal LM with its LoRA adapter (if any) merged into the weights, float32."""
    model, tokenizer = load_causal_lm(checkpoint)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    return model, tokenizer


def plain_checkpoint(base: ModelVersion, step: StepDir) -> Path:
    """The folder to train from: ``base.checkpoint``, or the base with its adapter merged in.

    A version that already carries an adapter is merged first, so the new step
    trains a fresh adapter on exactly the previous model (and, for DPO, the
    adapter-disabled model *is* the previous version: the reference).
    """
    if not base.adapter:
        return Path(base.checkpoint)
    merged = step.merged_base_dir
    if not (merged / "config.json").exists():
        model, tokenizer = load_merged(base.checkpoint, base.adapter)
        with atomic_dir(merged) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        del model
    return merged


def open_step(step: StepDir, base: ModelVersion, name: str, quiet: bool) -> tuple[ModelVersion | None, Path | None]:
    """The finished version when this step already ran, else claim the folder and return
    the checkpoint to train from. Of several processes, rank 0 does this first."""
    from failforge.train.callbacks import quiet_progress

    with main_process_first():
        if (done := step.done()) is not None:
            log.info("%s: already trained in %s", name, step.root)
            return done, None
        step.claim()
        with quiet_progress(quiet):  # merging a parent adapter loads weights too
            return None, plain_checkpoint(base, step)


def weights_saved(step: StepDir, settings: TrainSettings) -> bool:
    if settings.lora is not None:
        return (step.adapter_dir / "adapter_config.json").exists()
    return (step.model_dir / "config.json").exists()


def save_weights(model, tokenizer, step: StepDir, settings: TrainSettings) -> None:
    """The trained adapter (LoRA) or full checkpoint, renamed into place when complete."""
    if settings.lora is not None:
        with atomic_dir(step.adapter_dir) as tmp:
            model.save_pretrained(tmp)
    else:
        with atomic_dir(step.model_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)


def finish_causal(
    step: StepDir, base: ModelVersion, settings: TrainSettings, name: str, checkpoint: Path
) -> ModelVersion:
    """Export the GGUF (if asked and possible), fingerprint the weights, write DONE."""
    lora = settings.lora is not None
    adapter = step.adapter_dir if lora else None
    final_checkpoint = checkpoint if lora else step.model_dir
    gguf = export_if_possible(step, base, settings, final_checkpoint, adapter)
    version = ModelVersion(
        name=name,
        checkpoint=str(final_checkpoint),
        adapter=str(adapter) if adapter else None,
        gguf=str(gguf) if gguf else None,
        fingerprint=step.fingerprint(adapter or final_checkpoint),
        parent=base.fingerprint,
    )
    return step.finish(version)


def export_if_possible(
    step: StepDir, base: ModelVersion, settings: TrainSettings, checkpoint: Path, adapter: Path | None
) -> Path | None:
    if not settings.export_gguf:
        return None
    if step.gguf_path.exists():
        return step.gguf_path
    if not base.gguf:
        log.warning("%s: the parent has no GGUF to copy metadata from; no GGUF export", step.root)
        return None
    from failforge.train.gguf_export import GGUFExportError, export_gguf

    try:
        return export_gguf(checkpoint, adapter, base.gguf, step.gguf_path, settings.gguf_dtype)
    except GGUFExportError as e:
        log.warning("%s: no GGUF export (%s); the transformers backend serves this version", step.root, e)
        return None
