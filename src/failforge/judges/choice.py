"""Multiple choice: did the answer pick the reference letter?

``pass`` = the letter the answer picks is the reference, ``fail`` = another letter,
``unscorable`` = no single letter can be read (see ``answers.extract_choice``). An
accuracy over these verdicts counts an unscorable answer as wrong: the model did not
answer.
"""

from __future__ import annotations

from failforge.judges.answers import extract_choice
from failforge.judges.base import Judge, JudgeInput, Verdict


class ChoiceJudge(Judge):
    id = "choice"
    version = "1"

    def __init__(self, letters: str = "ABCD"):
        self.letters = letters

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out = []
        for item in items:
            picked = extract_choice(item.response, self.letters)
            if picked is None:
                out.append(self.verdict("unscorable", None, "no single option letter"))
            elif picked == str(item.reference).strip().upper():
                out.append(self.verdict("pass", 0.0, f"picked {picked}, the reference"))
            else:
                out.append(self.verdict("fail", 1.0, f"picked {picked}, the reference is {item.reference}"))
        return out
