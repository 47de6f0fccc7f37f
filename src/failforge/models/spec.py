"""Typed configuration of one model, as written in YAML under ``proposer:``, ``target:`` ..."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Backend = Literal["llamacpp", "transformers", "openai", "vllm"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Backend = "llamacpp"
    #: a known name (``failforge models``), a GGUF file, a checkpoint folder, or a server model id
    model: str = "smollm2-135m-instruct"
    #: LoRA adapter folder (transformers, vllm) - llamacpp needs adapters merged into a GGUF
    adapter: str | None = None
    #: override the chat template (Jinja) that the weights carry
    chat_template: str | None = None
    #: llamacpp / transformers: sequences decoded together
    batch_size: int = Field(8, ge=1)
    #: llamacpp: CPU threads (None = all cores)
    n_threads: int | None = Field(None, ge=1)
    #: llamacpp: context window in tokens
    n_ctx: int = Field(2048, ge=64)
    #: transformers: torch device and dtype
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    #: openai: server root, e.g. http://127.0.0.1:8000/v1, or a list of servers of the same model (least outstanding requests, health-checked)
    base_url: str | list[str] | None = None
    #: openai: name of the environment variable that holds the API key (never the key itself)
    api_key_env: str | None = None
    #: openai: requests in flight at once (on each endpoint)
    max_concurrency: int = Field(8, ge=1)
    #: openai: per-request timeout, seconds
    timeout_s: float = Field(120.0, gt=0)
    #: openai: retries on 429/5xx/timeouts/dropped connections (exponential backoff + jitter)
    max_retries: int = Field(5, ge=0)
    #: openai: at most this many HTTP requests (retries included) in any 60 s (None = no limit)
    max_requests_per_minute: int | None = Field(None, ge=1)
    #: openai: at most this many tokens (prompt + completion, as the server counts them) in any 60 s (None = no limit)
    max_tokens_per_minute: int | None = Field(None, ge=1)
    #: vllm: extra engine arguments
    engine_args: dict = Field(default_factory=dict)

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, v: str | None) -> str | None:
        # A value that is no variable name is likely the key itself: refuse it without
        # repeating it, so it reaches neither the terminal nor the config snapshot.
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key itself")
        return v
