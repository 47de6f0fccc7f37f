"""The judge contract: was this a failure?

A judge takes ``JudgeInput`` records and returns one ``Verdict`` each: ``fail``,
``pass`` or ``unscorable`` with a score and a short reason, stamped with the judge's
id and version. A judge never turns "could not score" into "pass": an error, an
empty or blocked answer, or an unparseable model verdict is ``unscorable``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Label = Literal["fail", "pass", "unscorable"]


class JudgeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str
    #: one response, or several (honesty asks k times)
    responses: list[str] = Field(default_factory=list)
    #: a reference value or answer, where the judge needs one
    reference: Any = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def response(self) -> str:
        return self.responses[0] if self.responses else ""


class Verdict(BaseModel):
    label: Label
    #: judge-specific score; higher = more of a failure unless the judge documents otherwise
    score: float | None = None
    reason: str = ""
    judge: str = ""
    judge_version: str = ""

    @property
    def is_failure(self) -> bool:
        return self.label == "fail"


class Judge(ABC):
    #: short stable id, e.g. "refusal"
    id: str = "judge"
    #: bump when the judge's behaviour changes, so stored verdicts can be told apart
    version: str = "1"

    @abstractmethod
    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        """One verdict per input, in order."""

    def judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out = self._judge(list(items))
        if len(out) != len(items):
            raise RuntimeError(f"judge {self.id} returned {len(out)} verdicts for {len(items)} inputs")
        return [v.model_copy(update={"judge": self.id, "judge_version": self.version}) for v in out]

    def verdict(self, label: Label, score: float | None = None, reason: str = "") -> Verdict:
        return Verdict(label=label, score=score, reason=reason, judge=self.id, judge_version=self.version)
