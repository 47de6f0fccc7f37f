"""Per-device training settings: precision, gradient checkpointing, CPU threads.

TRL's configs default to bf16 autocast and gradient checkpointing. Both help on a
GPU. On a CPU, checkpointing only recomputes activations, and bf16 is only as fast as
the CPU's bf16 instructions: a LoRA DPO step on SmolLM2-135M (batch 4 x 256 tokens)
took about twice as long with them (bench/train_step.py, docs/training.md), so
"auto" turns both off on a CPU and trains in exact float32.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict

from failforge.errors import ConfigError
from failforge.train.base import TrainSettings

DeviceKind = Literal["cpu", "cuda", "mps"]


class DevicePlan(BaseModel):
    """What a training step runs on and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceKind
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    #: torch intra-op threads on a CPU (None: leave torch's choice)
    threads: int | None = None

    def trainer_kwargs(self) -> dict:
        """The matching ``TrainingArguments`` / TRL config fields."""
        return {
            "bf16": self.bf16,
            "fp16": self.fp16,
            # transformers 5 renamed gradient_checkpointing; the new name wins over TRL's default of True
            "activation_checkpointing": self.gradient_checkpointing,
            "use_cpu": self.device == "cpu",
            # pinned memory only pays off for host -> GPU copies
            "dataloader_pin_memory": self.device == "cuda",
        }

    def apply(self) -> None:
        """Set process-wide torch state that the plan asks for (threads)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


def detect_device() -> DeviceKind:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_device(settings: TrainSettings, device: DeviceKind | None = None, threads: int | None = None) -> DevicePlan:
    """Choose precision, checkpointing and threads for ``settings`` on ``device`` (auto-detected).

    ``threads``: the CPU thread count to train with (``train.threads.run_threads``
    keeps it fixed for a run); None takes this process's CPU affinity.
    """
    device = device or detect_device()
    precision = settings.precision
    if precision == "auto":
        precision = _auto_precision(device)
    if precision == "fp16" and device != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA GPU, this step runs on {device}")
    if precision == "bf16" and device == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 or auto")
    checkpointing = settings.gradient_checkpointing
    if checkpointing is None:
        # recomputing activations saves GPU memory; on a CPU memory is rarely short and time is
        checkpointing = device == "cuda"
    return DevicePlan(
        device=device,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=checkpointing,
        threads=(threads or cpu_count()) if device == "cpu" else None,
    )


def _auto_precision(device: DeviceKind) -> str:
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"
