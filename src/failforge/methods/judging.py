"""The judge stage every method shares: measure the judge, then judge candidates.

A judge that decides a number in a report carries its error rate. At run start the
judge is measured on the task's shipped human-labelled set when there is one (cheap
for rule-based judges), else the latest saved ``failforge judge-eval --save`` result
for the same judge id and version is used; either way the run's meta says which
(``judges.<id>``), and "not measured" when neither exists.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.judges.measured import default_store_dir, describe, latest_result, measure, record_judges

if TYPE_CHECKING:
    from failforge.run.context import RunContext
    from failforge.tasks import Candidate, Task


def measure_judge(ctx: "RunContext", judge: Judge, task: "Task | None" = None, labelled: tuple | None = None) -> str:
    """Record the judge's error rate in the run's meta; returns the line it logged.
    ``labelled`` (a file and its ``load_labelled`` column options) overrides the task's set."""
    if labelled is None and task is not None:
        labelled = task.labelled_set(judge)
    if labelled is not None:
        path, kwargs = labelled
        entry = measure(judge, path, **kwargs)
    else:
        entry = latest_result(judge.id, judge.version, default_store_dir(os.environ))
    judges = record_judges(ctx.store, {judge.id: entry}, versions={judge.id: judge.version})
    line = f"judge {judge.id}@{judge.version}: " + describe(judge.id, judges[judge.id])
    ctx.log(line)
    return line


def judge_answers(judge: Judge, task: "Task", cands: list["Candidate"], answers) -> list[Verdict]:
    """One verdict per candidate, from the target's completions for it."""
    inputs = [
        JudgeInput(instruction=c.text, responses=[a.text for a in comps], reference=task.judge_reference(c))
        for c, comps in zip(cands, answers)
    ]
    return judge.judge(inputs) if inputs else []
