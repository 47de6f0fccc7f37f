"""Trainer callbacks: seconds and loss of every optimizer step, into the run store and a log."""

from __future__ import annotations

import json
import logging
import warnings
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from failforge.run.store import RunStore

log = logging.getLogger("failforge.train")


class StepRecorder(TrainerCallback):
    """Records ``(step, loss, seconds)`` per optimizer step.

    Rows go to ``store.put_train_step`` (keyed by the version's name, so a resumed
    step fills in only the steps it runs) and to a JSON-lines log next to the
    weights. Needs ``logging_steps=1`` so that every step's loss is logged.
    """

    def __init__(self, version: str, log_path: Path, store: RunStore | None = None):
        self.version = version
        self.log_path = Path(log_path)
        self.store = store
        self._t0: float | None = None
        self._seconds: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._seconds = time.perf_counter() - self._t0
            self._t0 = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:  # the end-of-training summary, eval logs
            return
        if not state.is_world_process_zero:  # of several processes, rank 0 alone writes the log
            return
        loss = float(logs["loss"])
        extra = {k: v for k, v in logs.items() if k != "loss" and isinstance(v, (int, float))}
        row = {"step": state.global_step, "loss": loss, "seconds": self._seconds, **extra}
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.store is not None:
            self.store.put_train_step(
                self.version, state.global_step, loss if math.isfinite(loss) else None, self._seconds, **extra
            )
        log.info("%s step %d loss %.4f (%.2f s)", self.version, state.global_step, loss, self._seconds or 0.0)
        self._seconds = None


@contextmanager
def quiet_progress(quiet: bool) -> Iterator[None]:
    """Silence the progress bars of datasets (tokenising) and transformers (loading) for one step."""
    if not quiet:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    was_ds = datasets.is_progress_bar_enabled()
    was_hf = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    # the load report ("classifier.weight | MISSING": a new head is expected here) is noise too
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # transformers 5 deprecation notices about names TRL still uses: noise for our users
            warnings.filterwarnings("ignore", message=r"`\w*gradient_checkpointing` is deprecated", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_ds:
            datasets.enable_progress_bars()
        if was_hf:
            hf_logging.enable_progress_bar()
