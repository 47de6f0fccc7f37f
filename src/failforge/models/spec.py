"""Typed configuration of one model, as written in YAML under ``proposer:``, ``target:`` ..."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["llamacpp", "transformers", "openai", "vllm", "ray"]

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
    #: ray: the model every replica loads (a spec of any other backend); see docs/scale.md
    inner: ModelSpec | None = None
    #: ray: model replicas, one Ray actor each
    replicas: int = Field(1, ge=1)
    #: ray: CPUs reserved per replica (fractions allowed)
    cpus_per_replica: float = Field(1.0, gt=0)
    #: ray: GPUs reserved per replica (vllm with tensor_parallel_size > 1: that many, one bundle each)
    gpus_per_replica: float = Field(0.0, ge=0)
    #: ray: other Ray resources each replica needs, e.g. {h100: 1} to keep a pool on the nodes started with that resource
    ray_resources: dict[str, float] = Field(default_factory=dict)
    #: ray: requests in flight on one replica at most (None: twice the inner batch_size; vllm: 256)
    max_in_flight_per_replica: int | None = Field(None, ge=1)
    #: ray: cluster address (None: the RAY_ADDRESS variable, else a local cluster for this process)
    ray_address: str | None = None
    #: ray: seconds to wait for the cluster to place every replica before giving up
    placement_timeout_s: float = Field(60.0, gt=0)
    #: ray: seconds to wait for every replica to load its model
    load_timeout_s: float = Field(1800.0, gt=0)

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, v: str | None) -> str | None:
        # A value that is no variable name is likely the key itself: refuse it without
        # repeating it, so it reaches neither the terminal nor the config snapshot.
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key itself")
        return v

    @model_validator(mode="after")
    def _ray_fields(self) -> ModelSpec:
        if self.backend == "ray":
            if self.inner is None:
                raise ValueError("backend 'ray' needs inner: the spec every replica loads, e.g. {backend: llamacpp, model: ...}")
            if self.inner.backend == "ray":
                raise ValueError("inner: a ray pool cannot hold another ray pool")
        elif self.inner is not None:
            raise ValueError(f"inner: only for backend 'ray' (backend is {self.backend!r})")
        return self
