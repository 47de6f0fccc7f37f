"""The TeaMs-RL instruction-equality reviewer.

Input: ``instruction`` = the instruction before a rewrite, ``responses[0]`` = the
rewritten instruction. A reviewer LLM answers "Equal" or "Not Equal" (same
constraints, depth and breadth). Labels: ``pass`` when Not Equal (the rewrite really
changed the instruction), ``fail`` when Equal (a wasted rewrite), ``unscorable`` for
any other answer. The score is the TeaMs-RL reward: 1.0 for Not Equal, 0.0 for Equal.
"""

from __future__ import annotations

import re

from failforge.judges.base import JudgeInput
from failforge.judges.llm import LLMJudge
from failforge.judges.rubrics import Conversation, Parsed, Rubric
from failforge.models.base import ChatModel, Message

# The WizardLM Evol-Instruct elimination prompt that TeaMs-RL's reviewer uses.
EQUALITY_TEMPLATE = """Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:
1. They have same constraints and requirments.
2. They have same depth and breadth of the inquiry.
The First Prompt: {first}
The Second Prompt: {second}
Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"""


class EqualityRubric(Rubric):
    name = "equality"
    max_tokens = 6

    def render(self, item: JudgeInput) -> Conversation:
        return [Message(role="user", content=EQUALITY_TEMPLATE.format(first=item.instruction, second=item.response))]

    def parse(self, text: str) -> Parsed | None:
        # Strict: the answer must open with "Not Equal" or "Equal" (any case,
        # markdown and a trailing full stop allowed). "Unequal", "They are equal" and
        # the like are unscorable rather than guessed.
        t = re.sub(r"^[\s*_\"'`:]+", "", text).lower()
        t = re.sub(r"^(your )?judge?ment\s*:\s*", "", t)
        if re.match(r"not\s+equal\b", t):
            return Parsed(label="pass", score=1.0, detail="Not Equal")
        if re.match(r"equal\b", t):
            return Parsed(label="fail", score=0.0, detail="Equal")
        return None


class EqualityJudge(LLMJudge):
    version = "1"

    def __init__(self, model: ChatModel, max_tokens: int | None = None):
        super().__init__(model, EqualityRubric(), max_tokens=max_tokens, check_response=False)
        self.id = "equality"

    def _judge(self, items: list[JudgeInput]) -> list:
        blank = [k for k, i in enumerate(items) if not i.instruction.strip() or not i.response.strip()]
        if not blank:
            return super()._judge(items)
        keep = [i for k, i in enumerate(items) if k not in blank]
        judged = iter(super()._judge(keep) if keep else [])
        return [
            self.verdict("unscorable", None, "an instruction is empty") if k in blank else next(judged)
            for k in range(len(items))
        ]
