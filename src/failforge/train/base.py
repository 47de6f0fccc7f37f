"""The training contract: a model version + a dataset in, a new model version out.

A ``ModelVersion`` is everything a backend needs to load a model: a plain
checkpoint folder (what transformers trains), an optional LoRA adapter on top, and
optionally a GGUF file with the same weights (what llama.cpp serves fastest).
Its fingerprint changes with the weights, so cached answers never outlive them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from failforge.models.spec import ModelSpec


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainSettings(BaseModel):
    """Configuration of one training step (YAML ``train.proposer`` / ``train.target``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sft", "dpo", "classifier"] = "sft"
    #: LoRA by default; ``lora: null`` means full fine-tuning
    lora: LoraSettings | None = Field(default_factory=LoraSettings)
    epochs: float = Field(1.0, gt=0)
    #: caps the number of optimizer steps (None = run the epochs)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    #: longer rows are dropped by TRL; few-shot proposer prompts need room
    max_length: int = Field(1024, ge=16)
    #: DPO temperature
    beta: float = Field(0.1, gt=0)
    seed: int = 0
    #: "auto" picks by measured capability: bf16 autocast on a GPU with bf16 (else fp16), and on a
    #: CPU whose bf16 matmul is >= 1.3x its fp32 one (timed once per machine, cached); else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: null: on only when a worst-case batch would not fit in the free memory (docs/training.md)
    gradient_checkpointing: bool | None = None
    #: DPO: the reference log-probabilities computed once per row before training;
    #: null: when the step visits more rows than the data set has (several epochs)
    precompute_ref: bool | None = None
    #: write the trained weights back into a GGUF so llama.cpp can serve them
    export_gguf: bool = True
    #: float type of the exported GGUF (norms stay f32 either way)
    gguf_dtype: Literal["f32", "f16"] = "f16"
    #: optimizer steps between resumable checkpoints (a killed run redoes at most this many);
    #: null: a quarter of max_steps (at least 1), or 50 when the epochs decide the length
    save_steps: int | None = Field(None, ge=1)
    #: data-parallel training processes; batch_size is split among them (docs/scale.md)
    processes: int = Field(1, ge=1)
    #: how the step runs: "inprocess" (in the run's own process), "accelerate" (a process group of
    #: its own under `accelerate launch`, over the step folder); null: accelerate when processes > 1
    #: or accelerate_config is set, else in process
    launcher: Literal["inprocess", "accelerate"] | None = None
    #: an `accelerate config` file (DDP, FSDP or DeepSpeed ZeRO across GPUs or nodes), passed to
    #: `accelerate launch --config_file`
    accelerate_config: str | None = None

    @model_validator(mode="after")
    def _check_processes(self) -> TrainSettings:
        if self.batch_size % self.processes:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of processes {self.processes} (each process takes an equal share)")
        if self.launcher == "inprocess" and (self.processes > 1 or self.accelerate_config):
            raise ValueError("launcher inprocess trains in one process: it takes neither processes > 1 nor accelerate_config")
        return self

    def launched(self) -> bool:
        """Whether the step runs as processes of its own under ``accelerate launch``."""
        if self.launcher is not None:
            return self.launcher == "accelerate"
        return self.processes > 1 or self.accelerate_config is not None

    def per_process_batch(self) -> int:
        return self.batch_size // self.processes

    def checkpoint_every(self) -> int:
        """Optimizer steps between checkpoints: ``save_steps``, else tied to ``max_steps``."""
        if self.save_steps is not None:
            return self.save_steps
        if self.max_steps is not None:
            return max(1, -(-self.max_steps // 4))
        return 50


class ModelVersion(BaseModel):
    """A loadable model: checkpoint (+ adapter) (+ GGUF with the same weights)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: plain transformers checkpoint folder (trainable)
    checkpoint: str
    #: LoRA adapter folder on top of ``checkpoint`` (None = the checkpoint itself)
    adapter: str | None = None
    #: GGUF file with the same (merged) weights, when exported
    gguf: str | None = None
    fingerprint: str
    parent: str | None = None

    def spec(self, backend: Literal["llamacpp", "transformers"] | None = None, **overrides) -> ModelSpec:
        """The fastest backend that can load this version, unless one is asked for."""
        if backend is None:
            backend = "llamacpp" if self.gguf else "transformers"
        if backend == "llamacpp":
            if not self.gguf:
                raise ValueError(f"model version {self.name} has no GGUF export")
            return ModelSpec(backend="llamacpp", model=self.gguf, **overrides)
        return ModelSpec(backend="transformers", model=self.checkpoint, adapter=self.adapter, **overrides)
