"""The task contract: what a failure-discovery loop needs to know about one task.

A task turns seeds into few-shot prompts for the proposer, parses what the proposer
wrote into an instruction (or rejects it), says how the target is asked, which
judge decides, and what a good response is for the target's fine-tuning data.
Methods (ReverseGen, ...) stay task-agnostic by going through this interface.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, Field

from failforge.judges.base import Judge
from failforge.judges.registry import JudgeSpec, build_judge
from failforge.models.base import ChatModel, Message, SamplingParams


class Seed(BaseModel):
    id: str
    text: str
    #: the task's reference (math: a value; honesty: the correct letter), if known
    reference: Any = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Candidate(BaseModel):
    """An instruction the proposer wrote, parsed and checked."""

    text: str
    reference: Any = None
    meta: dict[str, Any] = Field(default_factory=dict)


_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•]|question\s*\d*\s*[:.]|q\d*\s*[:.]|new question\s*[:.])\s*", re.I)


def first_block(text: str) -> str:
    """The proposer's first instruction: up to a blank line, without list numbering."""
    block = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0].strip()
    block = _NUMBERING.sub("", block).strip()
    return block.strip('"“”').strip()


def first_line(text: str) -> str:
    """The first non-empty line, without list numbering (one-line instructions)."""
    return first_block(text).split("\n", 1)[0].strip().strip('"“”').strip()


class Task(ABC):
    name: str
    #: proposer nucleus sampling (ReverseGen: 0.98 safety/honesty, 0.9 math)
    proposer_top_p: float = 0.98
    #: instruction text written to the few-shot prompt per example
    item_label: str = "Question"

    #: where the proposer's sample ends: one-line tasks stop at the first line break
    #: after some text (only the first line is read), which saves most of the tokens
    proposer_stop: tuple[str, ...] = ()

    #: what the few-shot prompt asks for
    request: str = "Write one new question of the same kind. Reply with the question only."

    def fewshot_messages(self, examples: list[Seed]) -> list[Message]:
        """Three seeds in the prompt; the proposer writes the fourth."""
        lines = [f"Here are some example {self.item_label.lower()}s:", ""]
        for i, s in enumerate(examples, 1):
            lines.append(f"{self.item_label} {i}: {self.render_seed(s)}")
        lines += ["", self.request]
        return [Message(role="user", content="\n".join(lines))]

    def render_seed(self, seed: Seed) -> str:
        return seed.text

    def sample_shots(self, seeds: list[Seed], shots: int, rng: random.Random) -> list[Seed]:
        return rng.sample(seeds, min(shots, len(seeds)))

    @abstractmethod
    def load_seeds(self, source: str, n: int | None, seed: int) -> list[Seed]:
        """Seeds from a dataset name or file."""

    @abstractmethod
    def parse(self, text: str) -> Candidate | None:
        """The instruction in the proposer's output, or None when it is not a valid one."""

    def target_messages(self, candidate: Candidate) -> list[Message]:
        return [Message(role="user", content=candidate.text)]

    def target_params(self, base: SamplingParams) -> SamplingParams:
        """Greedy by default; tasks that need several answers (honesty) override."""
        return base.model_copy(update={"temperature": 0.0, "n": 1})

    @abstractmethod
    def default_judge(self) -> JudgeSpec:
        """The judge used when the config names none."""

    def make_judge(self, spec: JudgeSpec | None, model: ChatModel | None = None) -> tuple[Judge, str | None]:
        """The judge, and a warning line when it is only a proxy for the paper's judge."""
        return build_judge(spec or self.default_judge(), model), None

    def labelled_set(self, judge: Judge) -> tuple[Any, dict[str, Any]] | None:
        """A human-labelled file that measures this task's judge at run start, with the
        ``load_labelled`` column options, or None (then a saved judge-eval is used)."""
        return None

    def judge_reference(self, candidate: Candidate) -> Any:
        """What the judge compares against (math: the computed value)."""
        return candidate.reference

    @abstractmethod
    def good_responses(
        self, items: list[tuple[Candidate, list[str], float | None]], teacher: ChatModel | None
    ) -> list[str | None]:
        """For each (instruction, target responses, judge score): a response to fine-tune
        the target on, or None when there is no good one."""
