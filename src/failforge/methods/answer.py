"""The plain answer job: a model answers every prompt of a seed file.

The smallest job that goes through the whole real path (config -> run directory ->
cached model calls -> records -> metrics); also useful on its own to collect a
model's answers to a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from failforge.errors import ConfigError
from failforge.methods.base import Method, MethodConfig
from failforge.models.base import SamplingParams
from failforge.models.spec import ModelSpec
from failforge.run.records import AnswerRecord, Provenance, put

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "resources" / "seeds" / "default_prompts.jsonl"


class AnswerConfig(MethodConfig):
    method: Literal["answer"] = "answer"
    model: ModelSpec = Field(default_factory=ModelSpec)
    #: JSONL file with a "prompt" field per line (default: the prompts failforge ships)
    prompts: str = str(DEFAULT_PROMPTS)
    #: answer only the first N prompts
    limit: int | None = Field(None, ge=1)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_tokens=96))


def read_prompts(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts from a JSONL/JSON/CSV/Parquet file with a non-empty "prompt" per row."""
    from failforge.data.loaders import load_local

    rows = []
    for i, row in enumerate(load_local(path), start=1):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ConfigError(f"prompts file {path}: row {i}: needs a non-empty string field 'prompt'")
        rows.append({"id": str(row.get("id", i)), "prompt": row["prompt"]})
    if not rows:
        raise ConfigError(f"prompts file {path}: no prompts")
    return rows[:limit] if limit else rows


class AnswerMethod(Method):
    name = "answer"
    Config = AnswerConfig

    @classmethod
    def check(cls, config: AnswerConfig) -> None:
        read_prompts(config.prompts, config.limit)
        super().check(config)

    def run(self) -> dict[str, Any]:
        cfg: AnswerConfig = self.config
        rows = read_prompts(cfg.prompts, cfg.limit)
        model = self.ctx.model("model", cfg.model)
        total = len(rows) * cfg.sampling.n
        with self.ctx.tracked(model, "answering", total):
            outs = model.generate([r["prompt"] for r in rows], cfg.sampling)
        records = [
            AnswerRecord(
                id=r["id"],
                prompt=r["prompt"],
                responses=[c.text for c in comps],
                provenance=Provenance(
                    method="answer",
                    target_fingerprint=model.fingerprint,
                    calls=len(comps),
                    tokens=sum(c.prompt_tokens + c.completion_tokens for c in comps),
                ),
            )
            for r, comps in zip(rows, outs)
        ]
        put(self.ctx.store, records, iteration=0)
        totals = self.ctx.store.call_totals(model.fingerprint)
        metrics = {
            "prompts": len(rows),
            "calls": totals["calls"],
            "tokens": totals["prompt_tokens"] + totals["completion_tokens"],
            "sent_this_process": model.sent,
        }
        self.ctx.store.put_metrics(0, metrics)
        return metrics


METHOD = AnswerMethod
