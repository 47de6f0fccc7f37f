"""Near-duplicate removal: MinHash (lexical) and embedding (semantic), keeping first occurrences."""

from __future__ import annotations

import numpy as np
import pytest

from failforge.data.dedup import embedding_dedup, embedding_dedup_vectors, minhash_dedup, shingles

BASE = "write a short story about a lighthouse keeper who finds a message in a bottle on a stormy night"


def _replace(text: str, positions: dict[int, str]) -> str:
    words = text.split()
    for i, w in positions.items():
        words[i] = w
    return " ".join(words)


def test_shingles_are_word_bigrams():
    assert shingles("a b c") == {"a b", "b c"}
    assert shingles("single") == {"single"}
    assert shingles("") == {""}


def test_minhash_drops_near_duplicates_and_keeps_the_first():
    # 19 words, 18 bigrams. Changing the last word changes 1 bigram: Jaccard 17/19 = 0.89.
    near = _replace(BASE, {18: "evening"})
    # Changing three words far apart changes 6 bigrams: Jaccard 12/24 = 0.5.
    far = _replace(BASE, {2: "long", 9: "discovers", 15: "the"})
    other = "explain how vaccines train the immune system to recognise a virus"
    texts = [BASE, near, far, BASE, other, other.upper()]
    assert minhash_dedup(texts) == [0, 2, 4, 5]  # case is kept, as in ReverseGen
    # whichever comes first is the one kept
    assert minhash_dedup([near, BASE, far]) == [0, 2]


def test_minhash_is_deterministic_and_threshold_matters():
    texts = [f"generate question {i} about the history of rome and its emperors {i}" for i in range(30)]
    first = minhash_dedup(texts)
    assert first == minhash_dedup(texts)
    # each pair differs in two words far apart: Jaccard 6/14 = 0.43, well under 0.78, so all are kept
    assert first == list(range(30))
    assert minhash_dedup(texts, threshold=0.3) == [0]
    with pytest.raises(ValueError):
        minhash_dedup(texts, threshold=0.0)


def test_embedding_dedup_on_crafted_vectors():
    v = np.array(
        [
            [1.0, 0.0],
            [0.99, 0.1],  # cos to row 0 = 0.995 -> dropped
            [0.0, 1.0],
            [0.7, 0.7],  # cos 0.707 to both kept rows -> kept
            [0.96, 0.28],  # cos to row 0 = 0.96 exactly: not above the threshold -> kept
        ]
    )
    assert embedding_dedup_vectors(v) == [0, 2, 3, 4]
    assert embedding_dedup_vectors(v, threshold=0.5) == [0, 2]
    assert embedding_dedup_vectors(np.zeros((0, 2))) == []


@pytest.mark.slow
def test_embedding_dedup_with_minilm():
    from failforge.metrics import SentenceTransformerEmbedder

    texts = [
        "How do I bake bread at home?",
        "How can I bake bread at home?",  # paraphrase: cosine about 0.99
        "What is the capital of France?",
        "how do i bake bread at home",
        "Write a poem about the sea.",
    ]
    assert embedding_dedup(texts, SentenceTransformerEmbedder()) == [0, 2, 4]
