"""What a method gets to work with: the run directory, its store, cached models,
progress bars and a log. Passed in explicitly; nothing global."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from failforge.models import load_model
from failforge.models.spec import ModelSpec
from failforge.run.cached import CachedModel
from failforge.run.calllog import ENV as CALL_LOG_ENV
from failforge.run.calllog import attach_call_log
from failforge.run.store import RunStore


class RunContext:
    def __init__(
        self,
        run_dir: Path,
        store: RunStore,
        console: Console | None = None,
        quiet: bool = False,
        logger: logging.Logger | None = None,
        token_budget: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.store = store
        self.console = console or Console(stderr=True, quiet=quiet)
        self.quiet = quiet
        self.logger = logger or logging.getLogger("failforge.run")
        self._models: dict[str, CachedModel] = {}
        self._progress: Progress | None = None
        #: the run's token budget: every model stops before a request once the store holds this many tokens
        self.token_budget = token_budget

    # --- models -------------------------------------------------------------
    def model(self, role: str, spec: ModelSpec) -> CachedModel:
        """The model for a role, loaded once, going through the store (cache + resume)."""
        key = f"{role}:{spec.model_dump_json()}"
        if key not in self._models:
            self.release(role)  # a role holds one model at a time (e.g. the proposer after training)
            t = time.perf_counter()
            inner = load_model(spec)
            if call_log := os.environ.get(CALL_LOG_ENV):
                attach_call_log(inner, call_log, role)
            cached = CachedModel(inner, self.store, label=role, token_budget=self.token_budget)
            self._models[key] = cached
            self.log(f"loaded {role}: {spec.backend}:{spec.model} fingerprint={inner.fingerprint} ({time.perf_counter() - t:.1f}s)")
            models = self.store.meta().get("models", {})
            models[role] = {"spec": spec.model_dump(mode="json", exclude_none=True), "fingerprint": inner.fingerprint}
            self.store.set_meta(models=models)
        return self._models[key]

    def release(self, role: str) -> None:
        """Free a role's model (e.g. before training replaces its weights)."""
        for key in [k for k in self._models if k.startswith(f"{role}:")]:
            self._models.pop(key).close()

    def release_pools(self) -> None:
        """Free every replica pool (backend ray) so a training step gets their CPUs and
        GPUs; a role's next use starts its pool again."""
        for key in [k for k, m in self._models.items() if m.inner.backend == "ray"]:
            self._models.pop(key).close()

    # --- progress and log ---------------------------------------------------------
    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar with ETA; yields ``advance(n)``. Silent with ``quiet``."""
        if self.quiet or not self.console.is_terminal:
            # Non-interactive output gets one line per task instead of a redrawn bar.
            start = time.perf_counter()
            self.log(f"{description}: {total} to do")
            yield lambda n=1: None
            self.log(f"{description}: done in {time.perf_counter() - start:.1f}s")
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)

    @contextmanager
    def tracked(self, model: CachedModel, description: str, total: int) -> Iterator[CachedModel]:
        """Route a cached model's per-chunk progress into a bar."""
        with self.progress(description, total) as advance:
            previous = model.progress
            model.progress = advance
            try:
                yield model
            finally:
                model.progress = previous

    def log(self, message: str) -> None:
        self.logger.info(message)
        if not self.quiet and not self.console.is_terminal:
            self.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        for m in self._models.values():
            m.close()
        self._models.clear()
