"""Flat, training-ready rows from a run's records, each carrying its provenance.

Every kind has a fixed column list with fixed types (``SCHEMAS``), so JSONL,
Parquet and ``datasets`` exports agree and an empty value never changes a
column's type. Column names follow what TRL's trainers read: ``prompt`` /
``chosen`` / ``rejected`` for DPO, ``messages`` for SFT.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from failforge.errors import ConfigError
from failforge.run.records import AnalysisRecord, AttemptRecord, PairRecord, Provenance, Record, SFTRecord

What = Literal["pairs", "sft", "failures", "analyses"]
WHATS: tuple[str, ...] = ("pairs", "sft", "failures", "analyses")

#: provenance columns every row carries, with their arrow type names
PROVENANCE_COLUMNS: list[tuple[str, str]] = [
    ("method", "string"),
    ("task", "string"),
    ("iteration", "int64"),
    ("proposer_fingerprint", "string"),
    ("target_fingerprint", "string"),
    ("judge", "string"),
    ("judge_fingerprint", "string"),
    ("seeds", "list<string>"),
    ("calls", "int64"),
    # JSON text: {"instructor": 1, "reviewer": 1, "expert": 1}, where a method counts calls by role
    ("calls_by_role", "string"),
    ("tokens", "int64"),
    ("stage", "string"),
    ("arm", "string"),
    ("harmful_content", "bool"),
]

SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "pairs": [
        ("id", "string"),
        ("prompt", "string"),
        ("chosen", "string"),
        ("rejected", "string"),
        # the verdicts that made `chosen` a failure-inducing instruction and `rejected` not
        ("chosen_verdict", "string"),
        ("chosen_reason", "string"),
        ("rejected_verdict", "string"),
        ("rejected_reason", "string"),
        *PROVENANCE_COLUMNS,
    ],
    "sft": [
        ("id", "string"),
        ("messages", "list<message>"),
        # the verdict on the instruction this example answers (the failure it fixes)
        ("verdict", "string"),
        ("reason", "string"),
        *PROVENANCE_COLUMNS,
    ],
    "failures": [
        ("id", "string"),
        ("instruction", "string"),
        ("response", "string"),
        ("responses", "list<string>"),
        ("proposer_prompt", "string"),
        ("reference", "string"),  # JSON text: references differ in type between tasks
        ("verdict", "string"),
        ("score", "float64"),
        ("reason", "string"),
        *PROVENANCE_COLUMNS,
    ],
    # Mistake Analysis: (instruction, harmful answer, critique) and the critique filter's verdict
    "analyses": [
        ("id", "string"),
        ("instruction", "string"),
        ("answer", "string"),
        ("critique", "string"),
        ("verdict", "string"),
        ("reason", "string"),
        *PROVENANCE_COLUMNS,
    ],
}


def check_what(what: str) -> list[str]:
    """``pairs|sft|failures|all`` -> the kinds to export, or a one-line error."""
    if what == "all":
        return list(WHATS)
    if what not in WHATS:
        raise ConfigError(f"--what: unknown value {what!r} (choose from {', '.join((*WHATS, 'all'))})")
    return [what]


def provenance_columns(p: Provenance, harmful: bool, fallback_iteration: int | None) -> dict[str, Any]:
    return {
        "method": p.method,
        "task": p.task,
        "iteration": p.iteration if p.iteration is not None else fallback_iteration,
        "proposer_fingerprint": p.proposer_fingerprint,
        "target_fingerprint": p.target_fingerprint,
        "judge": p.judge,
        "judge_fingerprint": p.judge_fingerprint,
        "seeds": [str(s) for s in p.seeds],
        "calls": p.calls,
        "calls_by_role": json.dumps(p.calls_by_role, sort_keys=True) if p.calls_by_role else None,
        "tokens": p.tokens,
        "stage": p.stage,
        "arm": p.arm,
        "harmful_content": bool(harmful),
    }


class VerdictIndex:
    """The verdict on each instruction, to join onto pairs and SFT rows (which do
    not store it): looked up by (iteration, instruction) first, then instruction."""

    def __init__(self, attempts: list[tuple[AttemptRecord, int | None]]):
        self._by_iter: dict[tuple[int | None, str], AttemptRecord] = {}
        self._by_text: dict[str, AttemptRecord] = {}
        for a, it in attempts:
            it = a.provenance.iteration if a.provenance.iteration is not None else it
            self._by_iter.setdefault((it, a.instruction.strip()), a)
            self._by_text.setdefault(a.instruction.strip(), a)

    def get(self, instruction: str, iteration: int | None) -> AttemptRecord | None:
        key = instruction.strip()
        return self._by_iter.get((iteration, key)) or self._by_text.get(key)


def pair_row(r: PairRecord, it: int | None, verdicts: VerdictIndex) -> dict[str, Any]:
    iteration = r.provenance.iteration if r.provenance.iteration is not None else it
    c, rj = verdicts.get(r.chosen, iteration), verdicts.get(r.rejected, iteration)
    return {
        "id": r.id,
        "prompt": r.prompt,
        "chosen": r.chosen,
        "rejected": r.rejected,
        "chosen_verdict": c.label if c else None,
        "chosen_reason": c.reason if c else None,
        "rejected_verdict": rj.label if rj else None,
        "rejected_reason": rj.reason if rj else None,
        **provenance_columns(r.provenance, r.harmful_content, it),
    }


def sft_row(r: SFTRecord, it: int | None, verdicts: VerdictIndex) -> dict[str, Any]:
    iteration = r.provenance.iteration if r.provenance.iteration is not None else it
    user = next((m.get("content", "") for m in r.messages if m.get("role") == "user"), "")
    a = verdicts.get(user, iteration) if user else None
    return {
        "id": r.id,
        "messages": [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in r.messages],
        "verdict": a.label if a else None,
        "reason": a.reason if a else None,
        **provenance_columns(r.provenance, r.harmful_content, it),
    }


def failure_row(r: AttemptRecord, it: int | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "instruction": r.instruction,
        "response": r.responses[0] if r.responses else "",
        "responses": list(r.responses),
        "proposer_prompt": r.proposer_prompt,
        "reference": None if r.reference is None else json.dumps(r.reference, ensure_ascii=False, default=str),
        "verdict": r.label,
        "score": r.score,
        "reason": r.reason,
        **provenance_columns(r.provenance, r.harmful_content, it),
    }


def analysis_row(r: AnalysisRecord, it: int | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "instruction": r.instruction,
        "answer": r.answer,
        "critique": r.critique,
        "verdict": r.label,
        "reason": r.reason,
        **provenance_columns(r.provenance, r.harmful_content, it),
    }


def load_typed(store, cls: type[Record]) -> list[tuple[Any, int | None]]:
    """(record, stored iteration) pairs; a malformed row names its kind and key."""
    out = []
    for row in store.records(cls.KIND):
        try:
            rec = cls.model_validate({k: v for k, v in row.items() if not k.startswith("_")})
        except Exception as e:
            raise ConfigError(f"{store.path}: {cls.KIND} record {row.get('_key')!r} does not parse ({type(e).__name__})") from e
        out.append((rec, row.get("_iteration")))
    return out


def build_rows(store, what: str) -> list[dict[str, Any]]:
    """All rows of one kind (``pairs``, ``sft``, ``failures`` or ``analyses``) from a run store."""
    if what == "analyses":
        return [analysis_row(r, it) for r, it in load_typed(store, AnalysisRecord)]
    attempts = load_typed(store, AttemptRecord)
    if what == "failures":
        return [failure_row(a, it) for a, it in attempts if a.failed]
    verdicts = VerdictIndex(attempts)
    if what == "pairs":
        return [pair_row(r, it, verdicts) for r, it in load_typed(store, PairRecord)]
    if what == "sft":
        return [sft_row(r, it, verdicts) for r, it in load_typed(store, SFTRecord)]
    raise ConfigError(f"--what: unknown value {what!r}")
