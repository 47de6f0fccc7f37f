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


def minhash_dedup(
    texts: Sequence[str],
    threshold: float = MINHASH_THRESHOLD,
    num_perm: int = MINHASH_NUM_PERM,
    ngram: int = 2,
    seed: int = MINHASH_SEED,
) -> list[int]:
    """Indices of texts kept after dropping each near-duplicate of an earlier kept text."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures: dict[int, Any] = {}
    kept: list[int] = []
    for i, text in enumerate(texts):
        m = _signature(text, num_perm, ngram, seed)
        if any(m.jaccard(signatures[j]) >= threshold for j in lsh.query(m)):
            continue
        lsh.insert(i, m)
        signatures[i] = m
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


def _signature(text: str, num_perm: int, ngram: int, seed: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch([s.encode("utf-8") for s in shingles(text, ngram)])
    return m


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
    from datasketch import MinHashLSH

    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    exact = {norm(r) for r in reference}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = {}
    for i, r in enumerate(reference):
        signatures[i] = _signature(r, num_perm, ngram, seed)
        lsh.insert(i, signatures[i])
    out = []
    for t in texts:
        if norm(t) in exact:
            out.append(True)
            continue
        m = _signature(t, num_perm, ngram, seed)
        out.append(any(m.jaccard(signatures[j]) >= threshold for j in lsh.query(m)))
    return out
