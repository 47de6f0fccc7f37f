"""Model versions of a run: which weights each role uses, and training them.

A role starts from the model the config names. Local weights (a GGUF or a
checkpoint folder) are trainable: a GGUF is converted once into a plain checkpoint.
Each training step writes its result under ``RUN_DIR/models/<name>/`` and returns a
new version; the next generation uses the fastest backend that can load it
(llama.cpp when the weights were exported back into a GGUF, else transformers).
Server-backed roles (openai, vllm) cannot be trained here: their loop still finds
failures, and training is skipped with a log line.
"""

from __future__ import annotations

import time
from pathlib import Path

from failforge.models.spec import ModelSpec
from failforge.run.context import RunContext
from failforge.train.base import ModelVersion, TrainSettings

# Spec fields that describe how to run a model, not which weights: carried over to
# the spec of a trained version.
_RUNTIME_FIELDS = ("batch_size", "n_threads", "n_ctx", "device", "dtype")


class Versions:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.models_dir = ctx.run_dir / "models"
        self._initial: dict[str, str] = {}

    def initial(self, role: str, spec: ModelSpec) -> ModelVersion | None:
        """The trainable version of a configured model, or None when it is served remotely."""
        if spec.backend == "ray":  # a replica pool trains the model its replicas load
            spec = spec.inner
        if spec.backend not in ("llamacpp", "transformers"):
            self.ctx.log(f"{role}: backend {spec.backend} is not trainable here; its training steps are skipped")
            return None
        from failforge.models.convert import ensure_checkpoint, is_gguf
        from failforge.models.registry import resolve_weights
        from failforge.train.checkpointing import base_version

        path = resolve_weights(spec.model)
        if is_gguf(path):
            version = base_version(ensure_checkpoint(path), name=f"{role}-base", gguf=path)
        else:
            version = base_version(path, name=f"{role}-base")
            if spec.adapter:
                version = version.model_copy(update={"adapter": str(resolve_weights(spec.adapter))})
        self._initial[role] = version.fingerprint
        return version

    def spec(self, role: str, version: ModelVersion | None, configured: ModelSpec) -> ModelSpec:
        """The spec to generate with: the configured one until the role has been trained."""
        if version is None or self._initial.get(role) == version.fingerprint:
            return configured
        pool, configured = (configured, configured.inner) if configured.backend == "ray" else (None, configured)
        runtime = {k: getattr(configured, k) for k in _RUNTIME_FIELDS}
        spec = version.spec(None)
        spec = spec.model_copy(update={k: v for k, v in runtime.items() if k in ModelSpec.model_fields})
        return pool.model_copy(update={"inner": spec}) if pool else spec  # the same pool, serving the new weights

    def _out(self, name: str) -> Path:
        return self.models_dir / name

    @property
    def quiet(self) -> bool:
        # Trainer progress bars only on a terminal; logs and the store get every step anyway.
        return self.ctx.quiet or not self.ctx.console.is_terminal

    def _done(self, name: str, started: float) -> None:
        steps = self.ctx.store.train_steps(name)
        loss = next((s["loss"] for s in reversed(steps) if s["loss"] is not None), None)
        shown = "-" if loss is None else f"{loss:.3f}"
        self.ctx.log(f"trained {name}: {len(steps)} steps, last loss {shown}, {time.perf_counter() - started:.1f}s")

    def train_sft(self, name: str, base: ModelVersion, rows: list[dict], settings: TrainSettings) -> ModelVersion:
        from failforge.train import train_sft

        self.ctx.release_pools()
        self.ctx.log(f"training {name}: SFT on {len(rows)} rows")
        t = time.perf_counter()
        if settings.launched():
            version = self._launched("sft", name, base, rows, settings)
        else:
            version = train_sft(base, rows, settings, self._out(name), store=self.ctx.store, name=name, quiet=self.quiet)
        self._done(name, t)
        return version

    def train_dpo(self, name: str, base: ModelVersion, rows: list[dict], settings: TrainSettings) -> ModelVersion:
        from failforge.train import train_dpo

        self.ctx.release_pools()
        self.ctx.log(f"training {name}: DPO on {len(rows)} pairs (reference = the previous version)")
        t = time.perf_counter()
        if settings.launched():
            version = self._launched("dpo", name, base, rows, settings, ref=base)
        else:
            version = train_dpo(base, rows, settings, self._out(name), store=self.ctx.store, ref=base, name=name, quiet=self.quiet)
        self._done(name, t)
        return version

    def _launched(self, kind, name: str, base: ModelVersion, rows: list[dict], settings: TrainSettings, ref=None) -> ModelVersion:
        """The step in processes of its own (``train/launch.py``); on CPUs the run's thread
        count is shared out among them."""
        from failforge.train.launch import train_launched
        from failforge.train.threads import run_threads

        threads = max(1, run_threads(self.ctx.store, log=self.ctx.log) // settings.processes)
        return train_launched(
            kind, base, rows, settings, self._out(name), name=name, store=self.ctx.store, ref=ref, threads=threads, progress=self.ctx.log
        )

    def served_like(self, name: str, base: ModelVersion, trained: ModelVersion, settings: TrainSettings) -> ModelVersion:
        """The untrained weights, exported and served exactly as ``trained`` is (the
        same GGUF export and dtype, or the same transformers path), so a before/after
        comparison differs by training alone, not by quantization."""
        from failforge.models.base import fingerprint_of

        fp = fingerprint_of(parent=base.fingerprint, export=settings.gguf_dtype if trained.gguf else "checkpoint")
        if not trained.gguf:
            return ModelVersion(name=name, checkpoint=base.checkpoint, adapter=base.adapter, fingerprint=fp, parent=base.fingerprint)
        out = self._out(name) / "model.gguf"
        if not out.exists():
            import os

            from failforge.train.gguf_export import export_gguf

            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name("model.gguf.tmp")
            self.ctx.log(f"exporting the untrained {base.name} like the trained one ({settings.gguf_dtype} GGUF)")
            export_gguf(base.checkpoint, base.adapter, base.gguf, tmp, settings.gguf_dtype)
            os.replace(tmp, out)
        return ModelVersion(name=name, checkpoint=base.checkpoint, adapter=base.adapter, gguf=str(out), fingerprint=fp, parent=base.fingerprint)

    def train_classifier(
        self, name: str, base: ModelVersion, rows: list[dict], labels: list[str], settings: TrainSettings
    ) -> ModelVersion:
        from failforge.train.classifier import train_classifier

        self.ctx.release_pools()
        self.ctx.log(f"training {name}: classifier on {len(rows)} rows (from {base.name})")
        t = time.perf_counter()
        version = train_classifier(
            base, rows, settings, self._out(name), store=self.ctx.store, name=name, labels=labels, quiet=self.quiet
        )
        self._done(name, t)
        return version
