"""Metrics against values computed by hand, plus one real all-MiniLM-L6-v2 check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from failforge.metrics import (
    SentenceTransformerEmbedder,
    accuracy,
    answer_entropy,
    attack_success_rate,
    average_precision,
    distinct_n,
    failure_rate,
    failures_per_1000_calls,
    inner_similarity,
    novelty,
    self_bleu,
    wilson_interval,
)
from failforge.metrics.diversity import tokenize


class TableEmbedder:
    """Looks vectors up in a table: crafted geometry for exact cosine checks."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        return np.array([self.table[t] for t in texts], dtype=np.float32)


# --- rates ---------------------------------------------------------------------


def test_wilson_interval_3_of_10_matches_hand_computation():
    # p = 0.3, z = 1.959964: centre = (0.3 + z^2/20) / (1 + z^2/10) = 0.355506,
    # half-width = z / (1 + z^2/10) * sqrt(0.3*0.7/10 + z^2/400) = 0.247716
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.107789, abs=1e-5)
    assert high == pytest.approx(0.603222, abs=1e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.161125, abs=1e-5)
    low, high = wilson_interval(20, 20)
    assert high == pytest.approx(1.0, abs=1e-12) and low == pytest.approx(1 - 0.161125, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_failure_rate_leaves_unscorable_out():
    est = failure_rate([True, False, None, True, False, False, None, False, False, False, True, False])
    assert (est.k, est.n, est.excluded) == (3, 10, 2)
    assert est.rate == pytest.approx(0.3)
    assert (est.low, est.high) == pytest.approx(wilson_interval(3, 10))
    assert attack_success_rate([True, None]).rate == 1.0


def test_empty_rate_is_undefined_not_zero():
    est = failure_rate([])
    assert est.rate is None and est.n == 0 and (est.low, est.high) == (0.0, 1.0)
    assert failure_rate([None, None]).rate is None


def test_accuracy():
    est = accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"])
    assert (est.k, est.n, est.rate) == (3, 4, 0.75)
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_failures_per_1000_calls():
    assert failures_per_1000_calls(3, 1500) == pytest.approx(2.0)
    assert failures_per_1000_calls(0, 10) == 0.0
    assert failures_per_1000_calls(0, 0) is None


# --- entropy and calibration ---------------------------------------------------------


def test_answer_entropy_natural_log():
    assert answer_entropy(["A"] * 10) == 0.0
    assert math.copysign(1.0, answer_entropy(["A"] * 10)) == 1.0  # not -0.0
    assert answer_entropy(["A"] * 5 + ["B"] * 5) == pytest.approx(math.log(2))
    # 4 A, 3 B, 2 C, 1 D: 1.2799 nats, over ReverseGen's 1.193 failure line
    spread = -sum(p * math.log(p) for p in (0.4, 0.3, 0.2, 0.1))
    assert answer_entropy(list("AAAABBBCCD")) == pytest.approx(spread)
    # 7 A, 2 B, 1 C: 0.8018 nats, under it
    peaked = -sum(p * math.log(p) for p in (0.7, 0.2, 0.1))
    assert answer_entropy(list("ABACAAABAA")) == pytest.approx(peaked)
    assert peaked < 1.193 < spread
    assert answer_entropy([]) is None


def test_average_precision_by_hand():
    # ranked by score: correct, wrong, correct, wrong -> precision at hits 1/1 and 2/3
    assert average_precision([True, False, True, False], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([True, True, False], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    assert average_precision([False, False], [0.2, 0.1]) is None


# --- lexical diversity ---------------------------------------------------------------


def test_self_bleu_by_hand():
    texts = ["a b c", "a b d"]
    # each is the other's only reference: unigram precision 2/3, bigram 1/2, trigram 0/1
    # (method1 smoothing turns 0/1 into 0.1/1); equal lengths, so no brevity penalty.
    bleu2 = math.sqrt(2 / 3 * 1 / 2)
    bleu3 = (2 / 3 * 1 / 2 * 0.1) ** (1 / 3)
    assert self_bleu(texts, ns=(2,)) == pytest.approx(bleu2)
    assert self_bleu(texts, ns=(2, 3)) == pytest.approx((bleu2 + bleu3) / 2)


def test_self_bleu_orders_sets_by_diversity():
    same = ["the cat sat on the mat"] * 3
    varied = ["the cat sat on the mat", "a storm hit the coast overnight", "prime numbers have two divisors"]
    assert self_bleu(same) == pytest.approx(1.0)
    assert self_bleu(varied) < 0.2
    assert self_bleu(["only one"]) is None


def test_self_bleu_sampling_is_seeded():
    texts = [f"text number {i} about topic {i % 3}" for i in range(12)]
    a = self_bleu(texts, sample_size=4, seed=3)
    assert a == self_bleu(texts, sample_size=4, seed=3)
    assert 0.0 < a < 1.0


def test_tokenizer_needs_no_download():
    assert tokenize("Hello, world! Don't stop.") == ["Hello", ",", "world", "!", "Do", "n't", "stop", "."]


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["a b", "a c"], 1) == pytest.approx(3 / 4)
    assert distinct_n(["a"], 2) is None


# --- embedding similarity -----------------------------------------------------------


def test_inner_similarity_and_novelty_on_crafted_vectors():
    emb = TableEmbedder({"x": [1, 0], "y": [0, 1], "xy": [2, 2], "-x": [-1, 0]})
    # pairs: (x, y) = 0, (x, xy) = 1/sqrt2, (y, xy) = 1/sqrt2
    assert inner_similarity(["x", "y", "xy"], emb) == pytest.approx(2 / math.sqrt(2) / 3)
    assert inner_similarity(["x", "-x"], emb) == pytest.approx(-1.0)
    # best matches to {x}: x -> 1, y -> 0, so novelty = 1 - 0.5
    assert novelty(["x", "y"], ["x"], emb) == pytest.approx(0.5)
    assert novelty(["x"], ["x", "y"], emb) == pytest.approx(0.0)
    assert inner_similarity(["x"], emb) is None and novelty([], ["x"], emb) is None


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEmbedder()


@pytest.mark.slow
def test_minilm_embeddings_separate_paraphrases_from_unrelated(minilm):
    paraphrases = ["How do I bake bread at home?", "How can I bake bread at home?", "how to bake bread at home"]
    unrelated = ["How do I bake bread at home?", "What is the capital of France?", "Write a poem about the sea."]
    vectors = minilm.embed(paraphrases)
    assert vectors.shape == (3, 384)
    close, far = inner_similarity(paraphrases, minilm), inner_similarity(unrelated, minilm)
    assert close > 0.9 and far < 0.3
    assert novelty(paraphrases, paraphrases, minilm) == pytest.approx(0.0, abs=1e-5)
    assert novelty(unrelated[1:], paraphrases[:1], minilm) > 0.7
