"""The method contract: a short loop that composes models, judges, data and training.

A method holds no backend code. It gets a typed ``Config`` and a ``RunContext``
(run directory, store, cached models, progress, log) and writes records and
metrics to the store. Re-running a method on the same run directory must give the
same result without repeating model calls (every call is cached) or finished
training steps: that is what ``failforge resume`` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from failforge.models.spec import ModelSpec

if TYPE_CHECKING:
    from failforge.run.context import RunContext


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    #: free-form label shown in reports
    name: str | None = None
    seed: int = 0
    #: stop cleanly once the run's model calls hold this many tokens (prompt + completion);
    #: `failforge resume --token-budget N` continues with a larger one (null = no budget)
    token_budget: int | None = Field(None, ge=1)


class Method(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]

    def __init__(self, config: MethodConfig, ctx: "RunContext"):
        self.config = config
        self.ctx = ctx

    @classmethod
    def model_specs(cls, config: MethodConfig) -> dict[str, ModelSpec]:
        """Every model the config names, by role (for pre-flight checks and the report)."""
        return _find_specs(config)

    @classmethod
    def check(cls, config: MethodConfig) -> None:
        """Pre-flight, before a run directory is written: every local model file exists,
        every server answers. Raises a FailforgeError with one line."""
        from failforge.run.preflight import check_model

        for role, spec in cls.model_specs(config).items():
            check_model(role, spec)

    @abstractmethod
    def run(self) -> dict[str, Any]:
        """Do the work; return a small summary for the terminal."""


def _find_specs(obj: BaseModel, prefix: str = "") -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for field in type(obj).model_fields:
        value = getattr(obj, field)
        path = f"{prefix}{field}"
        if isinstance(value, ModelSpec):
            out[path] = value
        elif isinstance(value, BaseModel):
            out.update(_find_specs(value, path + "."))
    return out
