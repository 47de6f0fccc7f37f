"""Who answers: one protocol (``base.ChatModel``), several backends."""

from failforge.models.base import ChatModel, Completion, Message, Request, SamplingParams
from failforge.models.spec import ModelSpec

__all__ = ["ChatModel", "Completion", "Message", "Request", "SamplingParams", "ModelSpec", "load_model"]


def load_model(spec: ModelSpec) -> ChatModel:
    """Build the backend a spec names. Heavy libraries are imported only here, lazily."""
    from failforge.models.factory import load_model as _load

    return _load(spec)
