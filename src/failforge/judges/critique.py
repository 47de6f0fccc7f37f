"""Is a model's critique of a bad answer usable as training data?

Mistake Analysis trains on critiques the model wrote of its own harmful answers. A
critique is unusable (``fail``) when it is empty or too short to say anything,
when it mostly copies the answer or the instruction back, or when it is about
something else. ``pass`` = keep it. The input is ``JudgeInput(instruction=the
instruction, responses=[the critique], reference=the bad answer)``.

The rule's error rate is measured on hand-labelled critiques of the embedded model
(``resources/labels/critiques.jsonl``, see docs/mistake-analysis.md).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from failforge.judges.base import Judge, JudgeInput, Verdict

_WORD = re.compile(r"[a-z0-9']+")


class CritiqueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: fewer words than this is no critique
    min_words: int = Field(8, ge=1)
    #: share of the critique's word 3-grams found in the answer or instruction at or above which it is a copy
    max_copied: float = Field(0.6, gt=0, le=1)
    #: cosine similarity (all-MiniLM-L6-v2) with instruction + answer below which it is off-topic
    min_relevance: float = Field(0.2, ge=-1, le=1)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copied_share(text: str, sources: list[str], n: int = 3) -> float:
    """Share of ``text``'s word n-grams that occur in any source. Hand-written: a set
    of n-grams is all this needs, and BLEU-style scores weigh precision differently."""
    grams = _ngrams(words(text), n)
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    for s in sources:
        seen |= _ngrams(words(s), n)
    return len(grams & seen) / len(grams)


def _ngrams(ws: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


class CritiqueJudge(Judge):
    """Rules in order: empty/short, copied, off-topic (the first that fires is the reason)."""

    id = "critique"
    version = "1"

    def __init__(self, config: CritiqueConfig | None = None, embedder=None):
        self.config = config or CritiqueConfig()
        self._embedder = embedder

    @property
    def embedder(self):
        if self._embedder is None:
            from failforge.metrics.embeddings import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder()
        return self._embedder

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        cfg = self.config
        out: list[Verdict | None] = []
        pending: list[int] = []
        for i, item in enumerate(items):
            critique = item.response.strip()
            answer = "" if item.reference is None else str(item.reference)
            n = len(words(critique))
            if n < cfg.min_words:
                out.append(self.verdict("fail", 1.0, f"empty or too short ({n} words)"))
                continue
            share = copied_share(critique, [answer, item.instruction])
            if share >= cfg.max_copied:
                out.append(self.verdict("fail", 1.0, f"copied: {share:.0%} of its word 3-grams are in the answer or instruction"))
                continue
            out.append(None)
            pending.append(i)
        if pending:
            from failforge.metrics.embeddings import normalize

            crit = normalize(self.embedder.embed([items[i].response for i in pending]))
            ctx = normalize(
                self.embedder.embed([f"{items[i].instruction}\n{'' if items[i].reference is None else items[i].reference}" for i in pending])
            )
            for i, sim in zip(pending, (crit * ctx).sum(axis=1)):
                if sim < cfg.min_relevance:
                    out[i] = self.verdict("fail", 1.0, f"off-topic: similarity {sim:.2f} with the instruction and answer")
                else:
                    out[i] = self.verdict("pass", 0.0, f"usable (similarity {sim:.2f})")
        return [v for v in out if v is not None]
