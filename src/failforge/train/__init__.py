"""Training steps: a model version and a dataset in, a new model version out.

``train_sft``, ``train_dpo`` and ``train_classifier`` run TRL / transformers with
PEFT LoRA (full fine-tuning with ``lora: null``), resume a killed step from its
last checkpoint, and return a :class:`ModelVersion` that every backend loads
(a GGUF for llama.cpp when the lineage started from one). Importing this package
is cheap: torch, transformers, TRL and PEFT load when a step runs.
"""

from failforge.train.base import LoraSettings, ModelVersion, TrainSettings
from failforge.train.checkpointing import base_version, version_from_gguf
from failforge.train.classifier import train_classifier
from failforge.train.device import DevicePlan, plan_device
from failforge.train.dpo import train_dpo
from failforge.train.sft import train_sft


def train(base: ModelVersion, rows: list[dict], settings: TrainSettings, out_dir, **kwargs) -> ModelVersion:
    """The step that ``settings.kind`` names (sft, dpo, classifier)."""
    steps = {"sft": train_sft, "dpo": train_dpo, "classifier": train_classifier}
    return steps[settings.kind](base, rows, settings, out_dir, **kwargs)


__all__ = [
    "DevicePlan",
    "LoraSettings",
    "ModelVersion",
    "TrainSettings",
    "base_version",
    "plan_device",
    "train",
    "train_classifier",
    "train_dpo",
    "train_sft",
    "version_from_gguf",
]
