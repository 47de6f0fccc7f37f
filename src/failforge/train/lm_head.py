"""The LM head scores only the positions that carry a label, on a CPU as on a GPU.

TRL's SFT and DPO trainers compute per-token log-probabilities with a fused LM head
(``trl.trainer.utils.add_fused_lm_head``): the hidden states are projected through
the vocabulary in tiles, and each tile is folded into log-softmax statistics. On
devices with Triton (CUDA, XPU) it scores only the positions whose label is not
-100, i.e. the completion tokens. On every other device it scores all positions,
prompt and padding included, and masks them afterwards: its comment gives the
reason, that a changing number of positions would change tile shapes and make a
compiling backend (Neuron) recompile at every batch. A CPU runs these tiles eagerly
and compiles nothing, and the vocabulary projection (49,152 x 576 on SmolLM2-135M)
is the largest matrix product of a small model, so scoring the prompt and padding
positions there only costs time: in a DPO step of the training bench about a
third of the positions carry no label.

``labelled_positions_only`` makes TRL take its compact path on CPUs while a step
builds its trainer (DPO's reference pass runs there) and trains. The log-probability
of every labelled position is computed by the same code either way; only the rows
of the tiles change, so losses agree to float rounding (tested in
``tests/test_train_lm_head.py``). This patches one private name of TRL, so it checks
the name is there and leaves TRL as it is otherwise (a warning in the log says so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("failforge.train")

#: the devices on which TRL's fused LM head is made to score labelled positions only
COMPACT_DEVICES = frozenset({"cpu"})


@contextmanager
def labelled_positions_only() -> Iterator[bool]:
    """Within the block, TRL's fused LM head skips unlabelled positions on CPUs too; yields whether it could."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if not callable(original) or not hasattr(trl_utils, "add_fused_lm_head"):
        log.warning("this TRL has no fused LM head switch; every position is scored")
        yield False
        return

    def compact(device) -> bool:
        return device.type in COMPACT_DEVICES or original(device)

    trl_utils._use_triton = compact
    try:
        yield True
    finally:
        trl_utils._use_triton = original
