"""Typed records a run stores (``RunStore.put_records(kind, ...)``).

Every record carries its provenance, so an exported row says which method, task,
iteration, models and judge produced it and what it cost. ``KIND`` is the records
table's ``kind`` column.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import BaseModel, Field


def record_id(prefix: str, text: str) -> str:
    """A stable id for the record of ``text`` at one step (``prefix``)."""
    return f"{prefix}-" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Provenance(BaseModel):
    method: str
    task: str = ""
    iteration: int | None = None
    proposer_fingerprint: str | None = None
    target_fingerprint: str | None = None
    judge: str | None = None  # judge id@version
    judge_fingerprint: str | None = None  # the judge model's fingerprint, for model judges
    seeds: list[str] = Field(default_factory=list)  # ids/texts of the seeds the row came from
    calls: int = 0  # model calls this row cost
    #: the same calls by role (e.g. instructor, reviewer, expert), where a method counts them apart
    calls_by_role: dict[str, int] = Field(default_factory=dict)
    tokens: int = 0  # prompt + completion tokens this row cost
    #: the method's step that made the row (e.g. induction, analysis, harmless, helpful)
    stage: str | None = None
    #: the arm (trained variant or baseline) whose training data the row is, if any
    arm: str | None = None


class Record(BaseModel):
    KIND: ClassVar[str] = "record"
    provenance: Provenance
    #: rows with harmful text (safety tasks) carry a marker so exports can flag them
    harmful_content: bool = False

    def key(self) -> str:  # pragma: no cover - each kind defines its own
        raise NotImplementedError


class AnswerRecord(Record):
    """A prompt and the model's answer(s) (the plain answer job)."""

    KIND: ClassVar[str] = "answer"
    id: str
    prompt: str
    responses: list[str]

    def key(self) -> str:
        return self.id


class JudgedAnswer(Record):
    """An instruction, the target's response(s) and the judge's verdict on them."""

    id: str
    instruction: str
    responses: list[str] = Field(default_factory=list)
    reference: Any = None
    label: str = "unscorable"  # fail | pass | unscorable
    score: float | None = None
    reason: str = ""
    #: the model server refused to answer (e.g. "HTTP 400: ... context ..."): the label is unscorable
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.label == "fail"

    def key(self) -> str:
        return self.id


class AttemptRecord(JudgedAnswer):
    """An instruction the proposer wrote, the target's response(s) and the judge's verdict."""

    KIND: ClassVar[str] = "attempt"
    proposer_prompt: str = ""


class EvalRecord(JudgedAnswer):
    """A held-out or re-attack answer: evaluation only, never exported as a failure
    and never used as training data."""

    KIND: ClassVar[str] = "eval"
    #: heldout | reattack
    stage: str
    #: which model answered: base (untrained, served like the trained one), trained, configured
    arm: str


class PromptRecord(Record):
    """A labelled prompt of the adversarial-judge method: a seed, a held-out item, a
    pool item (the random control) or an adversary's rewrite, with the judge's guess."""

    KIND: ClassVar[str] = "prompt"
    id: str
    text: str
    #: seed | heldout | pool | adversary
    source: str
    round: int | None = None
    #: the class a person (or the oracle) gave it; None while unlabelled
    label: str | None = None
    #: for an adversary's rewrite: the id of the prompt it rewrote
    origin: str | None = None
    #: the judge's verdict before it was trained on this round, and its probability
    judge_label: str | None = None
    judge_score: float | None = None
    #: labelled problematic and passed by the judge
    fooled: bool | None = None

    def key(self) -> str:
        return self.id


class AnalysisRecord(Record):
    """Mistake Analysis: an instruction, the model's harmful answer to it and the
    model's critique of that answer, with whether the critique passed the filter."""

    KIND: ClassVar[str] = "analysis"
    id: str
    instruction: str
    answer: str
    critique: str
    #: the critique filter's verdict: pass = kept as training data
    label: str = "unscorable"
    reason: str = ""

    @property
    def kept(self) -> bool:
        return self.label == "pass"

    def key(self) -> str:
        return self.id


class RewriteRecord(Record):
    """TeaMs-RL: one step of a rewrite episode: the action a policy chose, the
    instruction before and the instructor's rewrite, and the reviewer's outcome
    (not-equal | equal | eliminated | unscorable) with its reward and reason."""

    KIND: ClassVar[str] = "rewrite"
    id: str
    episode: int
    step: int
    action: str
    instruction: str
    rewrite: str
    outcome: str
    reward: float
    reason: str = ""

    def key(self) -> str:
        return self.id


class PairRecord(Record):
    """A DPO preference pair for the proposer: failure-inducing (chosen) vs not (rejected)."""

    KIND: ClassVar[str] = "pair"
    id: str
    prompt: str
    chosen: str
    rejected: str

    def key(self) -> str:
        return self.id


class SFTRecord(Record):
    """A supervised example (chat messages) for the target."""

    KIND: ClassVar[str] = "sft"
    id: str
    messages: list[dict[str, str]]

    def key(self) -> str:
        return self.id


RECORD_TYPES: dict[str, type[Record]] = {
    t.KIND: t for t in (AnalysisRecord, AnswerRecord, AttemptRecord, EvalRecord, PairRecord, PromptRecord, RewriteRecord, SFTRecord)
}


def put(store, records: list[Record], iteration: int | None = None) -> None:
    """Store typed records, grouped by kind."""
    by_kind: dict[str, list[Record]] = {}
    for r in records:
        by_kind.setdefault(r.KIND, []).append(r)
    for kind, rs in by_kind.items():
        store.put_records(kind, [(r.key(), r.model_dump()) for r in rs], iteration=iteration)


def load(store, kind: str, iteration: int | None = None) -> list[Record]:
    cls = RECORD_TYPES[kind]
    return [cls.model_validate({k: v for k, v in row.items() if not k.startswith("_")}) for row in store.records(kind, iteration)]
