"""Near-duplicate removal. Both functions keep the first occurrence and return kept indices.

- ``minhash_dedup``: lexical near-duplicates, as ReverseGen filters generated
  instructions: MinHash over word 2-gram shingles, Jaccard threshold 0.78,
  128 permutations (datasketch's LSH finds candidates; each candidate's estimated
  Jaccard is then checked against the threshold, so the decision is exact for the
  signatures, not left to LSH banding).
- ``embedding_dedup``: semantic near-duplicates: drop an item whose cosine to an
  earlier kept item is above 0.96.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from failforge.metrics.embeddings import Embedder, normalize

MINHASH_THRESHOLD = 0.78
MINHASH_NUM_PERM = 128
MINHASH_SEED = 1
EMBEDDING_THRESHOLD = 0.96


def shingles(text: str, n: int = 2) -> set[str]:
    """Word n-grams of a whitespace-split text (the text's single word when shorter than n)."""
    words = text.split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def normalize_text(text: str) -> str:
    """A text with case and spacing set aside, for exact-duplicate checks."""
    return " ".join(text.lower().split())


class _MinHashIndex:
    """MinHash signatures behind datasketch's LSH; a query's candidates are checked
    against the threshold by their estimated Jaccard, not left to LSH banding."""

    def __init__(self, threshold: float, num_perm: int, ngram: int, seed: int):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        from datasketch import MinHashLSH

        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.signatures: dict[int, Any] = {}

    def signature(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch([s.encode("utf-8") for s in shingles(text, self.ngram)])
        return m

    def near(self, m) -> bool:
        return any(m.jaccard(self.signatures[j]) >= self.threshold for j in self.lsh.query(m))

    def add(self, key: int, m) -> None:
        self.lsh.insert(key, m)
        self.signatures[key] = m


def minhash_dedup(
    texts: Sequence[str],
    threshold: float = MINHASH_THRESHOLD,
    num_perm: int = MINHASH_NUM_PERM,
    ngram: int = 2,
    seed: int = MINHASH_SEED,
) -> list[int]:
    """Indices of texts kept after dropping each near-duplicate of an earlier kept text."""
    index = _MinHashIndex(threshold, num_perm, ngram, seed)
    kept: list[int] = []
    for i, text in enumerate(texts):
        m = index.signature(text)
        if not index.near(m):
            index.add(i, m)
            kept.append(i)
    return kept


def embedding_dedup_vectors(vectors: np.ndarray, threshold: float = EMBEDDING_THRESHOLD) -> list[int]:
    """Indices kept: each row whose cosine to every earlier kept row is <= threshold."""
    unit = normalize(np.asarray(vectors))
    kept: list[int] = []
    for i in range(len(unit)):
        if kept and float((unit[kept] @ unit[i]).max()) > threshold:
            continue
        kept.append(i)
    return kept


def embedding_dedup(texts: Sequence[str], embedder: Embedder, threshold: float = EMBEDDING_THRESHOLD) -> list[int]:
    """Indices of texts kept after dropping semantic near-duplicates of earlier kept texts."""
    if not texts:
        return []
    return embedding_dedup_vectors(embedder.embed(texts), threshold)


def overlaps(
    texts: Sequence[str],
    reference: Sequence[str],
    threshold: float = MINHASH_THRESHOLD,
    num_perm: int = MINHASH_NUM_PERM,
    ngram: int = 2,
    seed: int = MINHASH_SEED,
) -> list[bool]:
    """For each text: is it equal (case and spacing aside) to, or a MinHash near-duplicate
    of, any reference text? Decontamination against held-out data."""
    exact = {normalize_text(r) for r in reference}
    index = _MinHashIndex(threshold, num_perm, ngram, seed)
    for i, r in enumerate(reference):
        index.add(i, index.signature(r))
    return [normalize_text(t) in exact or index.near(index.signature(t)) for t in texts]
