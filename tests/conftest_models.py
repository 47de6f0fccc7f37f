"""Session-wide real models for tests: the bundled SmolLM2 GGUF, llama.cpp and transformers.

Loaders are cached at module level, so each model is loaded once per test session even
when these fixtures are imported both by ``conftest.py`` and by a test module.
Tests use one llama.cpp thread: on a shared two-core machine, two spinning ggml
threads that wait on each other run several times slower than one.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

TEST_THREADS = 1


@functools.cache
def gguf_path() -> Path:
    from failforge.models.registry import resolve_weights

    return resolve_weights("smollm2-135m-instruct")


@functools.cache
def llamacpp(batch_size: int):
    from failforge.models.llamacpp import LlamaCppModel
    from failforge.models.spec import ModelSpec

    return LlamaCppModel(ModelSpec(model=str(gguf_path()), batch_size=batch_size, n_threads=TEST_THREADS))


@functools.cache
def converted_checkpoint() -> Path:
    """The bundled GGUF converted into a fresh temporary cache (so the conversion itself is tested)."""
    from failforge.models.convert import ensure_checkpoint

    root = Path(tempfile.mkdtemp(prefix="failforge-test-cache-"))
    atexit.register(shutil.rmtree, root, True)
    return ensure_checkpoint(gguf_path(), root=root)


@functools.cache
def transformers_model(batch_size: int):
    import torch

    from failforge.models.hf import TransformersModel
    from failforge.models.spec import ModelSpec

    # Same reason as TEST_THREADS: torch's OpenMP pool also spins while waiting.
    torch.set_num_threads(TEST_THREADS)
    return TransformersModel(ModelSpec(backend="transformers", model=str(converted_checkpoint()), batch_size=batch_size))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return gguf_path()


@pytest.fixture(scope="session")
def llamacpp_model():
    """llama.cpp on the bundled GGUF, 4 sequences per batch."""
    return llamacpp(4)


@pytest.fixture(scope="session")
def llamacpp_model_b1():
    """llama.cpp on the bundled GGUF, one sequence at a time."""
    return llamacpp(1)


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """The bundled GGUF as a plain transformers checkpoint folder."""
    return converted_checkpoint()


@pytest.fixture(scope="session")
def hf_model():
    """transformers on the converted checkpoint, 4 sequences per batch."""
    return transformers_model(4)
