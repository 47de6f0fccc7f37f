"""Which process of a training step this is, when ``accelerate launch`` started several.

``accelerate launch`` (and torchrun under it) sets ``WORLD_SIZE`` and ``RANK`` in each
process's environment; a step trained in the run's own process has neither. Rank 0
alone writes what the driver reads back: the weights, the GGUF, ``train_log.jsonl``,
``plan.json`` and ``DONE``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext


def world_size() -> int:
    """The number of processes training this step."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def main_process_first() -> AbstractContextManager:
    """Rank 0 runs the block first (claiming the step folder, merging the parent), the
    others wait and then find it done; in one process, nothing to wait for."""
    if world_size() == 1:
        return nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()
