"""The TeaMs-RL instruction-equality reviewer.

Input: ``instruction`` = the instruction before a rewrite, ``responses[0]`` = the
rewritten instruction. A reviewer LLM answers "Equal" or "Not Equal" (same
constraints, depth and breadth). Labels: ``pass`` when Not Equal (the rewrite really
changed the instruction), ``fail`` when Equal (a wasted rewrite), ``unscorable`` for
any other answer (an echo of the format, "Equal or Not Equal", included), for an
empty instruction on either side, and when the rewrite errored (``meta["error"]``).
The score is the TeaMs-RL reward: 1.0 for Not Equal, 0.0 for Equal.
"""

from __future__ import annotations

import re

from failforge.judges.base import JudgeInput
from failforge.judges.llm import LLMJudge
from failforge.judges.rubrics import Conversation, Parsed, Rubric
from failforge.models.base import ChatModel, Message

# "Equal or Not Equal", "Not Equal / Equal": the answer names both verdicts.
_BOTH_RE = re.compile(r"[\s*_\"'`.,]*(?:or\b|and\b|/)\s*(?:not\s+)?equal\b")

# "The first prompt is", "The two instructions are", "They are", "Both prompts are"
_SUBJECT_RE = re.compile(
    r"^(?:(?:the\s+)?(?:first|second|two|both)\s+(?:prompts?|instructions?)|both|they|the\s+(?:prompts|instructions))"
    r"\s+(?:is|are)\s+"
)

# The WizardLM Evol-Instruct elimination prompt that TeaMs-RL's reviewer uses.
EQUALITY_TEMPLATE = """Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:
1. They have same constraints and requirments.
2. They have same depth and breadth of the inquiry.
The First Prompt: {first}
The Second Prompt: {second}
Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"""


class EqualityRubric(Rubric):
    name = "equality"
    max_tokens = 12

    def render(self, item: JudgeInput) -> Conversation:
        return [Message(role="user", content=EQUALITY_TEMPLATE.format(first=item.instruction, second=item.response))]

    def parse(self, text: str) -> Parsed | None:
        # The answer must open with the verdict: "Not Equal" / "Equal" (any case,
        # markdown and a trailing full stop allowed), or a sentence whose subject is
        # the two prompts ("The first prompt is not equal", "They are equal").
        # "Unequal", "The first prompt is a more ..." and the like are unscorable
        # rather than guessed.
        t = re.sub(r"^[\s*_\"'`:]+", "", text).lower()
        t = re.sub(r"^(your )?judge?ment\s*:\s*", "", t)
        t = _SUBJECT_RE.sub("", t, count=1)
        m = re.match(r"(not\s+)?equal\b", t)
        if not m or _BOTH_RE.match(t, m.end()):
            return None  # anything else, or an echo of the format ("Equal or Not Equal")
        if m.group(1):
            return Parsed(label="pass", score=1.0, detail="Not Equal")
        return Parsed(label="fail", score=0.0, detail="Equal")


class EqualityJudge(LLMJudge):
    version = "3"

    def __init__(self, model: ChatModel, max_tokens: int | None = None):
        super().__init__(model, EqualityRubric(), max_tokens=max_tokens, check_response=False)
        self.id = "equality"

    def _judge(self, items: list[JudgeInput]) -> list:
        problems = {k: p for k, i in enumerate(items) if (p := _input_problem(i))}
        if not problems:
            return super()._judge(items)
        keep = [i for k, i in enumerate(items) if k not in problems]
        judged = iter(super()._judge(keep) if keep else [])
        return [
            self.verdict("unscorable", None, problems[k]) if k in problems else next(judged)
            for k in range(len(items))
        ]


def _input_problem(item: JudgeInput) -> str | None:
    if item.meta.get("error"):
        return f"rewrite error: {str(item.meta['error'])[:80]}"
    if not item.instruction.strip() or not item.response.strip():
        return "an instruction is empty"
    return None
