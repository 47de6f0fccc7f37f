"""Labels without a person, for unattended runs and tests.

Two sources, in this order:
1. the pool: an item from an already-labelled pool carries ``meta["label"]`` (one of
   the choices, or a judge word: ``fail`` -> choices[0], ``pass`` -> choices[1]);
2. a configured failforge ``Judge`` on the item's text (``JudgeInput.instruction``;
   ``meta["responses"]`` and ``meta["reference"]`` are passed on when present):
   ``fail`` -> choices[0], ``pass`` -> choices[1], ``unscorable`` -> no label.

Items neither source labels are left out of the result (and stay pending in the store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.labelling.base import LabelItem, Labeller, give_label
from failforge.run.store import RunStore


class OracleLabeller(Labeller):
    name = "oracle"

    def __init__(
        self,
        judge: Judge | None = None,
        use_pool: bool = True,
        name: str = "oracle",
        log: Callable[[str], None] | None = None,
    ):
        self.judge = judge
        self.use_pool = use_pool
        self.name = name
        self._log = log or logging.getLogger("failforge.labelling").info
        #: counts of the last call: from the pool, from the judge, unscorable, left without a label
        self.counts: dict[str, int] = {}

    def _pool_label(self, item: LabelItem, choices: list[str]) -> str | None:
        raw = item.meta.get("label") if self.use_pool else None
        if raw is None:
            return None
        word = str(raw).strip()
        if word in choices:
            return word
        return {"fail": choices[0], "pass": choices[1]}.get(word.lower())

    def _label(self, store: RunStore, items: list[LabelItem], choices: list[str], already: int) -> None:
        counts = {"pool": 0, "judge": 0, "unscorable": 0, "unlabelled": 0}
        ask: list[LabelItem] = []
        for item in items:
            lab = self._pool_label(item, choices)
            if lab is None:
                ask.append(item)
                continue
            give_label(store, item, lab, f"{self.name}:pool")
            counts["pool"] += 1
        if ask and self.judge is not None:
            verdicts = self.judge.judge([_judge_input(i) for i in ask])
            by = f"{self.name}:judge:{self.judge.id}@{self.judge.version}"
            for item, v in zip(ask, verdicts):
                if v.label == "unscorable":
                    counts["unscorable"] += 1
                    continue
                give_label(store, item, choices[0] if v.label == "fail" else choices[1], by)
                counts["judge"] += 1
            if counts["unscorable"]:
                self._log(
                    f"oracle: judge {self.judge.id}@{self.judge.version} could not score {counts['unscorable']} of"
                    f" {len(ask)} items (unscorable); they are left without a label"
                )
        counts["unlabelled"] = len(items) - counts["pool"] - counts["judge"]
        if counts["unlabelled"] and self.judge is None:
            self._log(f"oracle: {counts['unlabelled']} of {len(items)} items have no pool label and no judge is configured")
        self.counts = counts


#: rewrites of the embedded adversary, each with the label it inherited and a person's label
INHERITED_LABELS = "adversary_rewrites.jsonl"
INHERITED_COLUMNS = {"text_col": "text", "label_col": "label", "reference_col": "inherited", "positive": ["problematic"]}


class InheritedLabels(Judge):
    """The pool oracle as a judge, so its labels can be measured like any judge's: a
    rewrite is labelled with the class of the prompt it rewrote (``reference``);
    ``fail`` = the first choice (problematic). Measured on ``INHERITED_LABELS``."""

    id = "oracle:inherited"
    version = "1"

    def __init__(self, positive: str = "problematic"):
        self.positive = positive

    def _judge(self, items: list[JudgeInput]) -> list[Verdict]:
        out = []
        for item in items:
            if item.reference is None or not str(item.reference).strip():
                out.append(self.verdict("unscorable", None, "no inherited label"))
            else:
                hit = str(item.reference).strip() == self.positive
                out.append(self.verdict("fail" if hit else "pass", float(hit), f"inherited {item.reference}"))
        return out


def _judge_input(item: LabelItem) -> JudgeInput:
    responses = item.meta.get("responses")
    if isinstance(responses, str):
        responses = [responses]
    return JudgeInput(
        instruction=item.text,
        responses=[str(r) for r in responses] if isinstance(responses, list) else [],
        reference=item.meta.get("reference"),
        meta={k: v for k, v in item.meta.items() if k not in ("label", "responses", "reference")},
    )
