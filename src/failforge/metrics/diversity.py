"""Lexical diversity of a set of texts: Self-BLEU and distinct-n.

Self-BLEU follows ReverseGen's evaluation (its ``utils/texygen_self_bleu.py``, based
on Texygen): each text is the hypothesis and all the other texts are its
references; NLTK ``sentence_bleu`` with ``SmoothingFunction().method1`` and uniform
weights over 1..n-grams, for n = 2, 3, 4, 5; the n scores are averaged per text and
then over texts. Lower is more diverse.

Tokenization: ReverseGen calls ``nltk.word_tokenize``, which needs the ``punkt``
data download. We call the word tokenizer that ``word_tokenize`` uses after
sentence splitting (``NLTKWordTokenizer``) on the whole text, which needs no
download; the two differ only in how a full stop inside a multi-sentence text is
split off.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from functools import lru_cache

SELF_BLEU_NS: tuple[int, ...] = (2, 3, 4, 5)


@lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def tokenize(text: str) -> list[str]:
    return _word_tokenizer().tokenize(text)


def self_bleu(
    texts: Sequence[str],
    ns: Sequence[int] = SELF_BLEU_NS,
    sample_size: int | None = None,
    seed: int = 0,
) -> float | None:
    """Mean Self-BLEU over ``ns``; None with fewer than two texts.

    Each text is scored against all others, so cost grows with len(texts)^2;
    ``sample_size`` scores only that many randomly chosen texts (still against all
    others), as ReverseGen's ``hypo_size`` does.
    """
    if len(texts) < 2:
        return None
    if not ns or min(ns) < 1:
        raise ValueError(f"ns must be positive n-gram orders, got {list(ns)}")
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = [tokenize(t) for t in texts]
    weights = [tuple(1.0 / n for _ in range(n)) for n in ns]
    smoothing = SmoothingFunction().method1
    indices = list(range(len(tokens)))
    if sample_size is not None and sample_size < len(indices):
        indices = sorted(random.Random(seed).sample(indices, sample_size))
    scores: list[float] = []
    with warnings.catch_warnings():
        # NLTK warns for every hypothesis shorter than n tokens; smoothing handles it.
        warnings.simplefilter("ignore")
        for i in indices:
            others = tokens[:i] + tokens[i + 1 :]
            per_n = sentence_bleu(others, tokens[i], weights, smoothing_function=smoothing)
            if not isinstance(per_n, list):  # NLTK returns a bare number for a single weight tuple
                per_n = [per_n]
            scores.append(sum(per_n) / len(per_n))
    return sum(scores) / len(scores)


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams across ``texts`` (Li et al., 2016); None when there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from nltk.util import ngrams

    grams = [g for t in texts for g in ngrams(tokenize(t), n)]
    return len(set(grams)) / len(grams) if grams else None
