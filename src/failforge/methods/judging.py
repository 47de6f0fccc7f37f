"""The judge stage every method shares: measure the judge, then judge candidates.

A judge that decides a number in a report carries its error rate. At run start the
judge is measured on the task's shipped human-labelled set when there is one (cheap
for rule-based judges), else the latest saved ``failforge judge-eval --save`` result
for the same judge id and version is used; either way the run's meta says which
(``judges.<id>``), and "not measured" when neither exists.

An item whose answer the model server refused (a completion with ``error``) never
reaches the judge: its verdict is ``unscorable`` with the error as the reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.judges.measured import default_store_dir, describe, latest_result, measure, record_judges

if TYPE_CHECKING:
    from failforge.models.base import Completion
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


def answer_error(comps: Sequence["Completion"]) -> str | None:
    """The first error among one item's completions (None when every answer came back)."""
    return next((c.error for c in comps if c.error is not None), None)


def judge_or_error(judge: Judge, inputs: list[JudgeInput], answers: Sequence[Sequence["Completion"]]) -> list[Verdict]:
    """One verdict per input; items with a refused answer are ``unscorable`` without asking the judge."""
    errors = [answer_error(comps) for comps in answers]
    asked = [i for i, e in zip(inputs, errors) if e is None]
    got = iter(judge.judge(asked) if asked else [])
    return [next(got) if e is None else judge.verdict("unscorable", reason=f"model error: {e}") for e in errors]


def task_judge(ctx: "RunContext", task: "Task", spec) -> Judge:
    """The task's judge for a configured ``JudgeSpec`` (None = the task's default), its
    model loaded through the run, a warning printed and logged where the task gives one,
    and its error rate measured and recorded."""
    model = ctx.model("judge", spec.model) if spec is not None and spec.model else None
    judge, warning = task.make_judge(spec, model)
    if warning:
        ctx.console.print(f"[yellow]warning:[/yellow] {warning}")
        ctx.log(f"warning: {warning}")
    measure_judge(ctx, judge, task)
    return judge


def judge_answers(judge: Judge, task: "Task", cands: list["Candidate"], answers) -> list[Verdict]:
    """One verdict per candidate, from the target's completions for it."""
    inputs = [
        JudgeInput(instruction=c.text, responses=[a.text for a in comps], reference=task.judge_reference(c))
        for c, comps in zip(cands, answers)
    ]
    return judge_or_error(judge, inputs, answers)
