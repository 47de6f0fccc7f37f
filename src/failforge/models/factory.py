"""Spec -> backend instance. Each backend module is imported only when used."""

from __future__ import annotations

from failforge.models.base import ChatModel
from failforge.models.spec import ModelSpec


def load_model(spec: ModelSpec) -> ChatModel:
    if spec.backend == "llamacpp":
        from failforge.models.llamacpp import LlamaCppModel

        return LlamaCppModel(spec)
    if spec.backend == "transformers":
        from failforge.models.hf import TransformersModel

        return TransformersModel(spec)
    if spec.backend == "openai":
        from failforge.models.openai import OpenAIModel

        return OpenAIModel(spec)
    if spec.backend == "vllm":
        from failforge.models.vllm import VLLMModel

        return VLLMModel(spec)
    if spec.backend == "ray":
        from failforge.models.raypool import RayModel

        return RayModel(spec)
    raise ValueError(f"unknown backend {spec.backend!r}")
