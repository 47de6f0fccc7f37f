"""Tasks: what counts as a failure and what a good answer is, per problem family."""

from __future__ import annotations

from failforge.tasks.base import Candidate, Seed, Task

TASK_NAMES = ("math", "honesty", "safety")


def make_task(name: str, **options) -> Task:
    if name == "math":
        from failforge.tasks.math import MathTask

        return MathTask(**options)
    if name == "honesty":
        from failforge.tasks.honesty import HonestyTask

        return HonestyTask(**options)
    if name == "safety":
        from failforge.tasks.safety import SafetyTask

        return SafetyTask(**options)
    raise ValueError(f"unknown task {name!r}")


__all__ = ["Candidate", "Seed", "Task", "TASK_NAMES", "make_task"]
