"""Instruction equality by embedding: the rule-based stand-in for the TeaMs-RL reviewer.

Input: ``instruction`` = the instruction before a rewrite, ``responses[0]`` = the
rewrite. ``pass`` ("Not Equal", score 1.0) when the cosine similarity of the two
all-MiniLM-L6-v2 embeddings is below ``threshold``, ``fail`` ("Equal", score 0.0)
otherwise, ``unscorable`` when either side is empty. It reads meaning, not
constraints or depth, so it cannot tell a harder rewrite from an off-topic one; it
is for reviewers too small to answer the equality prompt (the embedded 135M model
answers 58 of 60 labelled pairs with something else), measured on the same pairs
(``resources/labels/equality.jsonl``).
"""

from __future__ import annotations

from typing import Any

from failforge.judges.base import Judge, JudgeInput, Verdict


class NoveltyJudge(Judge):
    id = "novelty"
    version = "1"

    def __init__(self, threshold: float = 0.9, embedder: Any = None):
        self.threshold = threshold
        self._embedder = embedder

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        ok = [k for k, i in enumerate(items) if i.instruction.strip() and i.response.strip()]
        cos = self._cosines([items[k].instruction for k in ok], [items[k].response for k in ok]) if ok else []
        by_k = dict(zip(ok, cos))
        out = []
        for k in range(len(items)):
            if k not in by_k:
                out.append(self.verdict("unscorable", None, "an instruction is empty"))
                continue
            c = by_k[k]
            reason = f"cosine {c:.3f} {'<' if c < self.threshold else '>='} {self.threshold}"
            out.append(self.verdict("pass", 1.0, reason) if c < self.threshold else self.verdict("fail", 0.0, reason))
        return out

    def _cosines(self, a: list[str], b: list[str]) -> list[float]:
        from failforge.metrics.embeddings import SentenceTransformerEmbedder, normalize

        if self._embedder is None:
            self._embedder = SentenceTransformerEmbedder()
        ea, eb = normalize(self._embedder.embed(a)), normalize(self._embedder.embed(b))
        return [float(x) for x in (ea * eb).sum(axis=1)]
