"""TRL's fused LM head scoring every position against labelled positions only, on this CPU.

One forward and backward pass of the bundled SmolLM2-135M with a LoRA adapter (r=16,
every linear layer, as a training step has) through TRL's fused LM head, on one
padded batch shaped like a DPO step of ``bench/train_step.py`` (4 pairs: 8 sequences
of a chat prompt plus an answer of 1 to 16 sentences, padded to the longest). The
two sides alternate pass by pass in one process, so a busy machine slows them alike:

- ``every position``: TRL as it runs off Triton devices (prompt and padding positions
  are projected through the vocabulary too, then masked);
- ``labelled only``: inside ``failforge.train.lm_head.labelled_positions_only``.

It prints the median seconds of each side, their ratio, and the largest difference
between the two sides' log-probabilities and LoRA gradients.

    .venv/bin/python bench/lm_head.py [--passes 6] [--pairs 4]
"""

from __future__ import annotations

import argparse
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

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from failforge.train import device

    torch.set_num_threads(device.cpu_count())
    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(base.checkpoint))
    model = AutoModelForCausalLM.from_pretrained(str(base.checkpoint), dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))  # what DPOTrainer asks for
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)  # a trained adapter, so the gradients are not trivially zero
    model.train()
    input_ids, attention, labels = padded_batch(tokenizer, args.pairs)
    slots, labelled = labels[:, 1:].numel(), int((labels[:, 1:] != -100).sum())
    print(f"batch {tuple(input_ids.shape)}: {int(attention.sum())} real tokens, {labelled} of {slots} positions labelled "
          f"({labelled / slots:.0%}); torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    def one_pass():
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
        out.loss.backward()
        seconds = time.perf_counter() - t0
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return seconds, out.log_probs.detach(), grads

    times: dict[str, list[float]] = {"every position": [], "labelled only": []}
    last = {}
    for i in range(args.passes):
        order = ["every position", "labelled only"] if i % 2 == 0 else ["labelled only", "every position"]
        for side in order:
            if side == "labelled only":
                with labelled_positions_only():
                    s, lp, g = one_pass()
            else:
                s, lp, g = one_pass()
            if i > 0:
                times[side].append(s)
            last[side] = (lp, g)
        print(f"  pass {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)
    every, only = (statistics.median(times[k]) for k in ("every position", "labelled only"))
    dlp = (last["every position"][0] - last["labelled only"][0]).abs().max().item()
    dg = (last["every position"][1] - last["labelled only"][1]).abs().max().item()
    gmax = last["every position"][1].abs().max().item()
    print(f"\nmedian of {len(times['labelled only'])} passes: every position {every:.2f} s, labelled only {only:.2f} s, "
          f"ratio {only / every:.2f}")
    print(f"largest difference: log-probabilities {dlp:.2e}, LoRA gradients {dg:.2e} (largest gradient {gmax:.2e})")


if __name__ == "__main__":
    main()
