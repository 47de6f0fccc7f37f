"""WizardLM's elimination rules as a judge: a generated text (an instruction rewrite,
or an answer to one) that is no use as training data.

Input: ``responses[0]`` = the text to check. ``fail`` (score 1.0) when a rule fires,
with the rule in the reason; ``pass`` (score 0.0) otherwise. The rules:
- ``empty``: nothing but white space;
- ``sorry``: the text contains "sorry" and has fewer than ``sorry_words`` words (a
  refusal, or a model that could not do the task);
- ``stop-words``: only punctuation and English stop words;
- ``marker``: it copies a label of the prompt that produced it ("#Given Prompt#",
  "rewritten prompt", ...).
Rules only: there is no model, so nothing is unscorable.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from failforge.judges.base import Judge, JudgeInput, Verdict

_WORD = re.compile(r"[A-Za-z0-9']+")


class EliminationRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a text with "sorry" and fewer words than this is eliminated (WizardLM: 80)
    sorry_words: int = Field(80, ge=0)
    #: labels that must not be copied into the text (case is ignored)
    markers: list[str] = Field(default_factory=list)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def elimination(text: str, rules: EliminationRules) -> str | None:
    """The first rule ``text`` breaks, as a short reason, or None."""
    if not text.strip():
        return "empty"
    words = _WORD.findall(text.lower())
    if "sorry" in text.lower() and len(text.split()) < rules.sorry_words:
        return "sorry: a short apology"
    if all(w in _stop_words() for w in words):
        return "stop-words: only punctuation and stop words"
    low = text.lower()
    for m in rules.markers:
        if m.strip() and m.lower() in low:
            return f"marker: copies {m!r}"
    return None


class EliminationJudge(Judge):
    id = "elimination"
    version = "1"

    def __init__(self, rules: EliminationRules | None = None):
        self.rules = rules or EliminationRules()

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out = []
        for item in items:
            why = elimination(item.response, self.rules)
            out.append(self.verdict("fail", 1.0, why) if why else self.verdict("pass", 0.0, "no elimination rule fires"))
        return out
