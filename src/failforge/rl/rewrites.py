"""The six instruction rewrites (WizardLM's Evol-Instruct operations) a policy chooses
from, as prompt templates for the instructor model.

The templates are failforge's own wording after WizardLM's; each holds
``{instruction}``. ``markers`` are the template's labels: a rewrite that copies one
("#Given Prompt#", "rewritten prompt", ...) is eliminated (``judges/elimination.py``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the action space, in order: action ``k`` is ``ACTIONS[k]``
ACTIONS: tuple[str, ...] = (
    "breadth",
    "add_constraints",
    "deepening",
    "concretizing",
    "increase_reasoning",
    "complicate_input",
)

_DEPTH = (
    "You rewrite prompts. Make the prompt below a little harder for an AI assistant to answer while keeping it "
    "reasonable and answerable by a person. Keep any table, code or input it contains. {how} Add no more than "
    "10 to 20 words. Reply with the rewritten prompt only: no introduction, no explanation, and do not use the "
    "words 'given prompt' or 'rewritten prompt'.\n\n#Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n"
)


def _depth(how: str) -> str:
    return _DEPTH.replace("{how}", how)


class RewriteTemplates(BaseModel):
    """One template per action (YAML ``rewrites:``); every one must contain ``{instruction}``."""

    model_config = ConfigDict(extra="forbid")

    breadth: str = (
        "You create prompts. Taking the prompt below as inspiration, write a brand new prompt in the same domain "
        "but on a rarer topic, about as long and as hard. Reply with the new prompt only: no introduction, no "
        "explanation, and do not use the words 'given prompt' or 'created prompt'.\n\n#Given Prompt#:\n"
        "{instruction}\n\n#Created Prompt#:\n"
    )
    add_constraints: str = _depth("Add one more constraint or requirement to it.")
    deepening: str = _depth("If it asks about an issue, ask about that issue in more depth and breadth.")
    concretizing: str = _depth("Replace its general concepts with more specific ones.")
    increase_reasoning: str = _depth("If a few simple steps of thought would solve it, ask explicitly for reasoning in several steps.")
    complicate_input: str = _depth("Make its input more complex, for example by giving it as a table, JSON or code.")
    #: labels of the templates; a rewrite that contains one (any case) is eliminated
    markers: list[str] = Field(
        default_factory=lambda: ["#given prompt#", "#rewritten prompt#", "#created prompt#", "given prompt", "rewritten prompt", "created prompt"]
    )

    @model_validator(mode="after")
    def _placeholders(self) -> "RewriteTemplates":
        for action in ACTIONS:
            if "{instruction}" not in getattr(self, action):
                raise ValueError(f"rewrites.{action} must contain {{instruction}}")
        return self

    def render(self, action: int, instruction: str) -> str:
        """The instructor's prompt for action ``action`` on ``instruction``."""
        if not 0 <= action < len(ACTIONS):
            raise ValueError(f"action {action} is not one of 0..{len(ACTIONS) - 1}")
        return getattr(self, ACTIONS[action]).replace("{instruction}", instruction)
