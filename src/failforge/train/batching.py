"""Batches without padding waste, and a count of the real tokens in each step.

- SFT batches are padding-free: TRL's own collator (``DataCollatorForLanguageModeling``
  with ``padding_free``) lays a batch's rows end to end in one sequence with
  ``position_ids`` restarting at 0 for each row, and transformers builds a
  block-diagonal causal mask from them, so no row attends to another (any attention
  kernel: SDPA and eager get the mask, flash-attention the sequence boundaries).
- DPO batches are grouped by length: TRL 1.16 turns ``padding_free`` off for DPO
  (it warns and falls back to padding), so rows of similar length go into the same
  batch (transformers' ``LengthGroupedSampler``), and where the model takes
  ``failforge.train.packing``'s row-by-row attention, the padded batch runs packed.
- ``TokenCount`` records, per optimizer step, the token slots a step computed on
  (``tokens``) and how many of them were real (``real_tokens``); they reach the run
  store and ``train_log.jsonl`` with the step's loss.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("failforge.train")

#: attention implementations that keep the rows of a padding-free batch apart
#: (transformers reads the row boundaries from ``position_ids``)
PADDING_FREE_ATTENTION = {"sdpa", "eager", "flash_attention_2", "flash_attention_3", "failforge_segments"}


def make_padding_free(trainer) -> bool:
    """Switch an ``SFTTrainer``'s collator to TRL's padding-free mode when the model supports it.

    The trainer was built with padding, so TRL has already truncated rows to
    ``max_length`` (it refuses ``padding_free`` with ``max_length`` at construction,
    because it does not truncate then); only the collation changes.
    """
    attention = getattr(trainer.model.config, "_attn_implementation", None)
    collator = trainer.data_collator
    if attention not in PADDING_FREE_ATTENTION or not hasattr(collator, "padding_free"):
        log.info("padded SFT batches: attention %r does not take padding-free batches", attention)
        return False
    if "seq_lengths" in trainer.train_dataset.column_names:  # packed rows carry their own boundaries
        return False
    collator.padding_free = True
    return True


def group_dpo_by_length(trainer, seed: int) -> None:
    """Batch DPO pairs of similar length together (a sampler seeded per epoch, so a resume sees the same order).

    transformers' ``LengthGroupedSampler`` draws from the global torch RNG, which a
    resumed run restores at a different moment than an uninterrupted one; this
    subclass draws from a generator seeded with ``seed + epoch`` instead. The
    length of a pair is what the collator pads it to: prompt plus the longer answer.
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    data = trainer.train_dataset
    limit = trainer.args.max_length or 1 << 30
    lengths = [
        min(limit, len(p) + max(len(c), len(r)))
        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
    ]

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            generator = torch.Generator().manual_seed(seed + self.epoch)
            # transformers sorts within "megabatches" of len/4 rows, one batch when there are fewer than
            # 8 batches of rows: no grouping at all for the small sets failforge trains on. At least two
            # batches a megabatch, so a small set is grouped too.
            mult = max(2, min(len(self.lengths) // (self.batch_size * 4), 50))
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=mult, generator=generator))

    per_step = trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps

    def sampler(dataset=None):
        return SeededLengthGroupedSampler(per_step, lengths=lengths)

    trainer._get_train_sampler = sampler


class TokenCount(TrainerCallback):
    """Counts token slots and real tokens of the batches of each optimizer step.

    Wraps the trainer's ``training_step`` (``install``), which runs once per batch
    (the collator would not do: accelerate's data loader collates one batch ahead);
    at each log (``logging_steps=1``: every step) it adds ``tokens`` and
    ``real_tokens`` to the logged values, which ``StepRecorder`` stores. Add it
    before ``StepRecorder``.
    """

    def __init__(self, packed: bool = False):
        #: the model runs padded batches packed (``failforge.train.packing``): it computes real tokens only
        self.packed = packed
        self.tokens = 0
        self.real = 0

    def count(self, batch: dict[str, Any]) -> None:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else int(ids.numel())
        self.tokens += real if self.packed else int(ids.numel())
        self.real += real

    def install(self, trainer) -> TokenCount:
        inner = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            self.count(inputs)
            return inner(model, inputs, *args, **kwargs)

        trainer.training_step = training_step
        trainer.add_callback(self)
        return self

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and self.tokens:
            logs["tokens"] = self.tokens
            logs["real_tokens"] = self.real
            self.tokens = self.real = 0
