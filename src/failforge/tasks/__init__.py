"""Tasks: what counts as a failure and what a good answer is, per problem family."""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from failforge.errors import ConfigError
from failforge.tasks.base import Candidate, Seed, Task

TASK_NAMES = ("math", "honesty", "safety")


def make_task(name: str, **options) -> Task:
    """The task ``name`` with its ``task_options``, checked against its constructor: an
    unknown option or a value of the wrong type is a one-line ConfigError."""
    cls = _task_class(name)
    return cls(**_checked_options(name, cls, options))


def _task_class(name: str) -> type[Task]:
    if name == "math":
        from failforge.tasks.math import MathTask

        return MathTask
    if name == "honesty":
        from failforge.tasks.honesty import HonestyTask

        return HonestyTask
    if name == "safety":
        from failforge.tasks.safety import SafetyTask

        return SafetyTask
    raise ConfigError(f"task: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")


def _checked_options(name: str, cls: type[Task], options: dict[str, Any]) -> dict[str, Any]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [n for n, p in inspect.signature(cls).parameters.items() if p.kind in kinds]
    hints = typing.get_type_hints(cls.__init__) if params else {}
    out = {}
    for key, value in options.items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise ConfigError(f"task_options.{key}: unknown option for task {name} (known: {known})")
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value) if key in hints else value
        except ValidationError as e:
            raise ConfigError(f"task_options.{key}: {e.errors()[0]['msg']} (got {value!r})") from None
    return out


__all__ = ["Candidate", "Seed", "Task", "TASK_NAMES", "make_task"]
