"""How far the TeaMs-RL reviewer can be trusted: a reviewer model against the
hand-labelled instruction pairs, against itself with the two instructions swapped,
and against the embedding-novelty rule.

On the 60 pairs of ``resources/labels/equality.jsonl`` (40 Not Equal rewrites by the
embedded instructor, 15 paraphrases and 5 copies labelled Equal) it prints, for the
reviewer model with WizardLM's equality prompt and for the embedding rule:
how many answers could be read, accuracy against the labels on those, the
swapped-order agreement, and the agreement of the two.

    .venv/bin/python bench/reviewer_agreement.py [--model smollm2-135m-instruct] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import json

from failforge.judges.base import JudgeInput
from failforge.judges.equality import EqualityJudge
from failforge.judges.measured import packaged_labels
from failforge.judges.novelty import NoveltyJudge
from failforge.models import load_model
from failforge.models.spec import ModelSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="the reviewer (a registry name or a GGUF file)")
    ap.add_argument("--threshold", type=float, default=0.9, help="the embedding rule's cosine threshold")
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(packaged_labels("equality.jsonl"), encoding="utf-8")]
    human = ["pass" if r["label"] == "Not Equal" else "fail" for r in rows]
    forward = [JudgeInput(instruction=r["first"], responses=[r["second"]]) for r in rows]
    swapped = [JudgeInput(instruction=r["second"], responses=[r["first"]]) for r in rows]
    with load_model(ModelSpec(backend="llamacpp", model=a.model)) as model:
        judge = EqualityJudge(model)
        fwd, back = judge.judge(forward), judge.judge(swapped)
    rule = NoveltyJudge(a.threshold).judge(forward)

    def report(name, verdicts, again=None):
        read = [k for k, v in enumerate(verdicts) if v.label != "unscorable"]
        right = sum(verdicts[k].label == human[k] for k in read)
        line = f"{name:40} readable {len(read):2}/{len(rows)}  accuracy on those {right}/{len(read)}"
        if again is not None:
            both = [k for k in read if again[k].label != "unscorable"]
            line += f"  swapped order: readable both ways {len(both)}, same verdict {sum(verdicts[k].label == again[k].label for k in both)}"
        print(line)
        return read

    read = report(f"reviewer {a.model}", fwd, back)
    report(f"embedding rule (threshold {a.threshold})", rule)
    agree = sum(fwd[k].label == rule[k].label for k in read)
    print(f"reviewer vs embedding rule: {agree}/{len(read)} of the reviewer's readable answers agree")
    answers = {}
    for v in fwd:
        if v.label == "unscorable":
            answers[v.reason[:60]] = answers.get(v.reason[:60], 0) + 1
    print("most common unreadable answers:", json.dumps(sorted(answers.items(), key=lambda x: -x[1])[:5]))


if __name__ == "__main__":
    main()
