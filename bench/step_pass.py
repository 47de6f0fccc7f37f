"""One training pass of a DPO-shaped and an SFT-shaped batch, each way failforge and TRL can lay it out.

One forward and backward pass of the bundled SmolLM2-135M with a LoRA adapter (r=16,
every linear layer, as a training step has) through TRL's fused LM head, on batches
shaped like the steps of ``bench/train_step.py``. The sides alternate pass by pass in
one process, so a busy machine slows them alike.

DPO, one padded batch of 4 pairs (8 sequences: a chat prompt plus an answer of 1 to 16
sentences, padded on the right to the longest, as TRL's collator does):

- ``padded, every position``: TRL as it runs off Triton devices (prompt and padding
  positions are projected through the vocabulary too, then masked);
- ``padded, labelled only``: inside ``failforge.train.lm_head.labelled_positions_only``;
- ``packed, labelled only``: also ``failforge.train.packing`` (the real tokens run as one
  sequence, each row attending to itself): what a failforge DPO step runs.

SFT, the same 8 sequences padding-free (one sequence, ``position_ids`` restarting per row,
as TRL's padding-free collator makes it), labelled positions only:

- ``SDPA, block mask``: transformers' block-diagonal mask over the whole sequence;
- ``row by row``: ``failforge.train.packing.segment_attention``: what a failforge SFT step runs.

It prints the median seconds of each side, the ratios, and the largest difference
between the sides' log-probabilities and LoRA gradients.

    .venv/bin/python bench/step_pass.py [--passes 6] [--pairs 4]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_step import SEQ, dpo_rows  # noqa: E402

from failforge.models.registry import resolve_weights  # noqa: E402
from failforge.train import version_from_gguf  # noqa: E402
from failforge.train.lm_head import labelled_positions_only  # noqa: E402


def padded_batch(tokenizer, pairs: int):
    import torch

    seqs, masks = [], []
    for row in dpo_rows(pairs):
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        if hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
        for answer in (row["chosen"], row["rejected"]):
            completion = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            ids = (list(prompt) + completion)[:SEQ]
            seqs.append(ids)
            masks.append(([0] * len(prompt) + [1] * len(completion))[:SEQ])
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    completion = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    labels = input_ids.masked_fill(completion == 0, -100)
    return input_ids, attention, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=6, help="passes per side (the first of each is left out)")
    ap.add_argument("--pairs", type=int, default=4, help="DPO pairs in the batch (two sequences each)")
    args = ap.parse_args()

    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from failforge.train import device, packing

    torch.set_num_threads(device.cpu_count())
    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(base.checkpoint))
    plain = AutoModelForCausalLM.from_pretrained(str(base.checkpoint), dtype=torch.float32, attn_implementation="sdpa")
    add_fused_lm_head(plain, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))  # what DPOTrainer asks for
    plain = get_peft_model(plain, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, p in plain.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)  # a trained adapter, so the gradients are not trivially zero
    plain.train()
    rows = copy.deepcopy(plain)
    assert packing.use_segment_attention(rows.get_base_model()) and packing.pack_padded_batches(rows.get_base_model())

    input_ids, attention, labels = padded_batch(tokenizer, args.pairs)
    slots, labelled = labels[:, 1:].numel(), int((labels[:, 1:] != -100).sum())
    real = int(attention.sum())
    print(f"DPO batch {tuple(input_ids.shape)}: {real} real tokens ({real / input_ids.numel():.0%}), {labelled} of {slots} "
          f"positions labelled ({labelled / slots:.0%}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    mask = attention.bool()
    lengths = mask.sum(1)
    flat_ids, flat_labels = input_ids[mask].unsqueeze(0), labels[mask].clone()
    flat_labels[torch.cumsum(lengths, 0) - lengths] = -100
    position_ids = torch.cat([torch.arange(int(n)) for n in lengths]).unsqueeze(0)
    print(f"SFT batch (1, {flat_ids.shape[1]}): the same sequences padding-free, {len(lengths)} rows", flush=True)

    def one_pass(model, **batch):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with labelled_positions_only() if batch.pop("compact") else contextlib.nullcontext():
            out = model(**batch, fused_lm_head=True, use_cache=False)
            out.loss.backward()
        seconds = time.perf_counter() - t0
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return seconds, out.log_probs.detach(), grads

    dpo = dict(input_ids=input_ids, attention_mask=attention, labels=labels)
    sft = dict(input_ids=flat_ids, position_ids=position_ids, labels=flat_labels.unsqueeze(0), compact=True)
    sides = {
        "DPO padded, every position": (plain, {**dpo, "compact": False}),
        "DPO padded, labelled only": (plain, {**dpo, "compact": True}),
        "DPO packed, labelled only": (rows, {**dpo, "compact": True}),
        "SFT SDPA, block mask": (plain, sft),
        "SFT row by row": (rows, sft),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    last = {}
    for i in range(args.passes):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for side in order:
            model, batch = sides[side]
            s, lp, g = one_pass(model, **dict(batch))
            if i > 0:
                times[side].append(s)
            last[side] = (lp, g)
        print(f"  pass {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians of {args.passes - 1} passes (the first left out):")
    print("| batch | side | s/pass | vs the first side of its batch | max |Δ log-prob| | max |Δ gradient| |")
    print("|---|---|---|---|---|---|")
    for kind, first in (("DPO", "DPO padded, every position"), ("SFT", "SFT SDPA, block mask")):
        lp0, g0 = last[first]
        for side in (k for k in sides if k.startswith(kind)):
            lp, g = last[side]
            print(f"| {kind} | {side[4:]} | {med[side]:.2f} | {med[side] / med[first]:.2f} | "
                  f"{(lp - lp0).abs().max().item():.1e} | {(g - g0).abs().max().item():.1e} |")
    print(f"(largest LoRA gradient {last['DPO padded, every position'][1].abs().max().item():.1e})")


if __name__ == "__main__":
    main()
