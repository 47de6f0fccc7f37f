"""LLM-as-judge: any ChatModel plus a rubric.

The caller passes the model - typically a ``CachedModel`` so judge calls are cached
and resumable like every other call. Decoding is greedy so a verdict is
reproducible. An empty or errored response is ``unscorable`` without asking the
model; so is a judge answer the rubric cannot parse (an empty one included) or a
missing answer.
"""

from __future__ import annotations

from failforge.judges.answers import response_problem
from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.judges.rubrics import Rubric
from failforge.models.base import ChatModel, SamplingParams


class LLMJudge(Judge):
    version = "2"

    def __init__(self, model: ChatModel, rubric: Rubric, max_tokens: int | None = None, check_response: bool = True):
        self.model = model
        self.rubric = rubric
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens or rubric.max_tokens)
        # Judges of (instruction, response) need a response; the equality judge
        # compares two instructions and checks its own inputs.
        self.check_response = check_response and rubric.needs_response
        self.id = f"llm:{rubric.name}"

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(items)
        ask: list[int] = []
        for k, item in enumerate(items):
            problem = response_problem(item) if self.check_response else None
            if problem:
                out[k] = self.verdict("unscorable", None, problem)
            else:
                ask.append(k)
        if ask:
            answers = self.model.generate([self.rubric.render(items[k]) for k in ask], self.params)
            if len(answers) != len(ask):
                raise RuntimeError(f"judge model returned {len(answers)} answers for {len(ask)} prompts")
            for k, completions in zip(ask, answers):
                if not completions:
                    out[k] = self.verdict("unscorable", None, "the judge model gave no answer")
                    continue
                text = completions[0].text
                parsed = self.rubric.parse(text)
                if parsed is None:
                    out[k] = self.verdict("unscorable", None, f"unparseable judge answer: {' '.join(text.split())[:80]!r}")
                else:
                    out[k] = self.verdict(parsed.label, parsed.score, parsed.detail)
        return [v for v in out if v is not None]
