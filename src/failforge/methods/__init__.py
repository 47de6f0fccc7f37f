"""The methods: each a short loop over the shared parts, with its own config schema."""

from __future__ import annotations

import importlib

from failforge.methods.base import Method, MethodConfig

# name -> module; imported lazily so the CLI starts fast
_MODULES = {
    "answer": "failforge.methods.answer",
    "reversegen": "failforge.methods.reversegen",
    "adversarial-judge": "failforge.methods.adversarial_judge",
    "mistake-analysis": "failforge.methods.mistake_analysis",
    "teams-rl": "failforge.methods.teams_rl",
}

METHOD_NAMES = tuple(_MODULES)
#: what `failforge run` with no config runs
DEFAULT_METHOD = "reversegen"


def get_method(name: str) -> type[Method]:
    module = importlib.import_module(_MODULES[name])
    return module.METHOD


__all__ = ["Method", "MethodConfig", "METHOD_NAMES", "DEFAULT_METHOD", "get_method"]
