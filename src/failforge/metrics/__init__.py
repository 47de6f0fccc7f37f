"""Numbers over sets: failure rates, diversity, embedding similarity, entropy, calibration.

Heavy libraries (scipy, nltk, scikit-learn, sentence-transformers) load on first use.
"""

from failforge.metrics.calibration import average_precision
from failforge.metrics.diversity import SELF_BLEU_NS, distinct_n, self_bleu
from failforge.metrics.embeddings import (
    Embedder,
    SentenceTransformerEmbedder,
    cosine_matrix,
    inner_similarity,
    inner_similarity_of_vectors,
    novelty,
    novelty_of_vectors,
)
from failforge.metrics.entropy import answer_entropy
from failforge.metrics.rates import (
    RateEstimate,
    accuracy,
    attack_success_rate,
    failure_rate,
    failures_per_1000_calls,
    rate,
    wilson_interval,
)

__all__ = [
    "SELF_BLEU_NS",
    "Embedder",
    "RateEstimate",
    "SentenceTransformerEmbedder",
    "accuracy",
    "answer_entropy",
    "attack_success_rate",
    "average_precision",
    "cosine_matrix",
    "distinct_n",
    "failure_rate",
    "failures_per_1000_calls",
    "inner_similarity",
    "inner_similarity_of_vectors",
    "novelty",
    "novelty_of_vectors",
    "rate",
    "self_bleu",
    "wilson_interval",
]
