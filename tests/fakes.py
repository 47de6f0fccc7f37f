"""A fake ChatModel for unit tests of logic only (cache keys, store, CLI plumbing).

Anything an issue asks to be shown working runs against real models instead.
"""

from __future__ import annotations

import hashlib

from failforge.models.base import ChatModel, Completion, Request, fingerprint_of


class EchoModel(ChatModel):
    """Answers deterministically from the request (and its seed); counts calls."""

    backend = "fake"

    def __init__(self, name: str = "echo", version: str = "1"):
        self.name = name
        self.version = version
        self.calls: list[Request] = []

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend=self.backend, name=self.name, version=self.version)

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.calls.extend(requests)
        out = []
        for r in requests:
            last = r.messages[-1].content
            tag = hashlib.sha256(f"{last}|{r.seed}|{r.params.temperature}".encode()).hexdigest()[:6]
            text = f"echo: {last} [{tag}]"
            out.append(Completion(text=text, prompt_tokens=len(last.split()), completion_tokens=len(text.split()), sample_index=r.sample_index))
        return out
