"""Checks made before a run directory is written, so bad input leaves nothing behind."""

from __future__ import annotations

from failforge.errors import ModelUnavailable
from failforge.models.gguf_check import check_gguf
from failforge.models.registry import resolve_weights
from failforge.models.spec import ModelSpec


def check_model(role: str, spec: ModelSpec) -> None:
    if spec.backend == "ray":
        from failforge.models.raypool import check_pool

        return check_pool(role, spec, check_model)
    try:
        if spec.backend in ("llamacpp", "transformers"):
            weights = resolve_weights(spec.model)
            if weights.is_file():  # a folder is a checkpoint; a file must be a whole GGUF
                check_gguf(weights)
            if spec.adapter:
                resolve_weights(spec.adapter)
        elif spec.backend == "openai":
            if not spec.base_url:
                raise ModelUnavailable("base_url is required for backend 'openai'")
            from failforge.models.openai import OpenAIModel

            model = OpenAIModel(spec)
            try:
                model.probe()
            finally:
                model.close()
        elif spec.backend == "vllm":
            import importlib.util

            if importlib.util.find_spec("vllm") is None:
                raise ModelUnavailable("backend 'vllm' needs the optional extra: pip install 'failforge[vllm]'")
    except ModelUnavailable as e:
        raise ModelUnavailable(f"{role}: {e}") from None
