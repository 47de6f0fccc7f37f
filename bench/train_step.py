"""Training speed against the machine's own bound: LoRA SFT and DPO on the bundled SmolLM2-135M.

First the machine's matmul rate is measured at each precision (fp32, bf16; best of
several rounds, as ``failforge.train.device`` does for its choice). Then each
configuration trains a few steps through ``train_sft`` / ``train_dpo`` on rows of
varied length (batch 4, at most 256 tokens a row, LoRA r=16), and the
configurations alternate round by round, so a busy machine slows them alike:

    SFT  fp32 | bf16 autocast | fp32 + checkpointing | bf16 + checkpointing | bf16, padded batches
    DPO  the same four, each with the reference precomputed and computed at every step
    and, at the plan failforge picks, each of its layout choices switched off: the LM head
    scoring every position (prompt and padding too, TRL's own way off Triton devices), and
    SDPA's block mask over a padding-free SFT batch / padded DPO batches instead of
    ``failforge.train.packing`` (rows attended one by one, DPO pairs packed), TRL's own
    torch folds of the LM head's tiles instead of ``failforge.train.lm_head_fold`` (in
    place), TRL's 32,768-column vocabulary tiles instead of ``narrow_cpu_tiles``'s 4,096,
    the tiles projected again in the backward pass (TRL's way) instead of kept
    (``failforge.train.lm_head_kept``),
    PEFT's LoRA forward instead of ``failforge.train.lora_forward`` (the adapter
    added into the base output in one pass), for SFT PEFT's ``nn.Dropout`` instead of
    ``failforge.train.dropout``, and where the plan is bf16, its packed rows attending in
    bf16 instead of float32 (``failforge.train.packing.float32_attention``)

For each configuration it prints the median seconds per step (the first step of
each run is left out: it pays one-off costs), tokens per second, the share of real
tokens among the token slots computed, and the fraction of the FLOP bound:

    FLOPs:  SFT  4 x params x real tokens            (LoRA: forward, plus the backward pass to the inputs)
            DPO  4 x params x real tokens of chosen + rejected
                 + 2 x params x the tokens of the reference forward (at every step: the same batch;
                   precomputed: every row once, before training, timed and added to the step times)
    bound:  the matmul rate at the configuration's precision: measured at the start, before
            and after every run and after every optimizer step within it (outside the step's
            time), the best of all those measurements ("FLOP bound": the lowest fraction), and
            beside it the fraction at each run's own rate (the mean of the measurements before,
            during and after it, weighted by the run's seconds: "at its rate"), since other work
            on a shared machine moves the rate by up to 3x within minutes

and, for every variant, the plan's tokens/s over the variant's in the same round: the
median over the rounds and in how many of them the plan was faster. With ``--flanked``
(and ``--plan-only``) the plan also runs between every two variants, and each variant's
run is compared with the mean of the plan runs just before and after it, seconds apart
rather than minutes.

``auto`` marks the configuration failforge picks by itself on this machine.

    .venv/bin/python bench/train_step.py [--steps 3] [--rounds 2] [--only sft|dpo] [--match TEXT] [--plan-only [--flanked] | --grid]

    e.g. the plan beside its tiles projected twice, four rounds:
    .venv/bin/python bench/train_step.py --steps 4 --rounds 4 --plan-only --match "projected twice"

    the fp32 part of the grid (where bf16 runs at emulated speed):
    .venv/bin/python bench/train_step.py --steps 4 --rounds 3 --grid --match fp32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from failforge.models.registry import resolve_weights
from failforge.run.store import RunStore
from failforge.train import TrainSettings, train_dpo, train_sft, version_from_gguf
from failforge.train import batching, device, dropout, lm_head, lm_head_fold, lm_head_kept, lora_forward, packing
from failforge.train.callbacks import StepRecorder  # noqa: F401  (imports transformers before timing)
from transformers import TrainerCallback

SEQ = 256
BATCH = 4
SENTENCE = "Step {i}: add {i} apples to the basket and count them again carefully."
# answers of 1 to 16 sentences (about 17 tokens each): rows from ~30 to 256 tokens, as real data varies
SIZES = [1, 9, 4, 14, 2, 11, 6, 16, 3, 8, 13, 5, 10, 7, 15, 12]


def answer(k: int, word: str = "apples") -> str:
    return " ".join(SENTENCE.format(i=i).replace("apples", word) for i in range(k))


def sft_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Explain counting, case {i}."},
                {"role": "assistant", "content": answer(SIZES[i % len(SIZES)])},
            ]
        }
        for i in range(n)
    ]


def dpo_rows(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Write a plan, case {i}."}],
            "chosen": answer(SIZES[i % len(SIZES)]),
            "rejected": answer(SIZES[(i + 3) % len(SIZES)], "pears"),
        }
        for i in range(n)
    ]


@dataclass
class Config:
    kind: str
    label: str
    settings: dict
    padded: bool = False  # SFT with the old padded batches (padding-free off)
    all_positions: bool = False  # the LM head scores every position (failforge.train.lm_head off)
    plain_attention: bool = False  # SDPA with its mask, DPO padded (failforge.train.packing off)
    trl_folds: bool = False  # TRL's own torch folds of the LM head's tiles (failforge.train.lm_head_fold off)
    torch_dropout: bool = False  # PEFT's nn.Dropout on LoRA inputs (failforge.train.dropout off)
    peft_forward: bool = False  # PEFT's LoRA forward (failforge.train.lora_forward off)
    wide_tiles: bool = False  # TRL's 32,768-column LM-head tiles (failforge.train.lm_head_fold.narrow_cpu_tiles off)
    recomputed_tiles: bool = False  # the LM-head tiles projected again in the backward pass (lm_head_kept off)
    bf16_attention: bool = False  # bf16 rows attend in bf16 (failforge.train.packing.float32_attention off)
    seconds: list[float] = field(default_factory=list)  # per-step seconds, all rounds
    tokens: int = 0
    real: int = 0
    flops: float = 0.0
    total_s: float = 0.0
    rate_s: float = 0.0  # seconds x the matmul rate during each run (GFLOP), for the bound at the run's own rate
    ref_s: list[float] = field(default_factory=list)
    run_tps: list[float] = field(default_factory=list)  # real tokens per second of each run
    flanked: list[float] = field(default_factory=list)  # --flanked: the plan's speed beside each run over this run's

    @property
    def plan_choice_off(self) -> bool:
        """One of the plan's layout and memory-pass choices is switched off."""
        return (self.all_positions or self.plain_attention or self.trl_folds or self.torch_dropout
                or self.peft_forward or self.wide_tiles or self.recomputed_tiles or self.bf16_attention)

    @property
    def precision(self) -> str:
        return self.settings.get("precision", "fp32")


class RateProbe(TrainerCallback):
    """Measures the matmul rate after every optimizer step, outside the step's own time.

    ``StepRecorder`` times a step from ``on_step_begin`` to its own ``on_step_end``, and
    callbacks passed to a step run after it, so a probe here falls between two timed steps.
    """

    def __init__(self, precision: str, threads: int):
        self.precision, self.threads = precision, threads
        self.rates: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        rate = device.measure_matmul(self.threads, n=1024, rounds=2, seconds=0.05, precisions=(self.precision,))
        self.rates.append(rate[self.precision])


class RefTimer:
    """Times TRL's reference pass (``precompute_ref_log_probs``) and counts its real tokens."""

    def __init__(self):
        from trl import DPOTrainer

        self.cls = DPOTrainer
        self.inner = DPOTrainer._precompute_ref_logps
        self.seconds = 0.0
        self.tokens = 0

    def __enter__(self):
        timer = self

        def timed(trainer, dataset, name, batch_size):
            t0 = time.perf_counter()
            out = timer.inner(trainer, dataset, name, batch_size)
            timer.seconds += time.perf_counter() - t0
            limit = trainer.args.max_length or 1 << 30
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True):
                timer.tokens += min(limit, len(p) + len(c)) + min(limit, len(p) + len(r))
            return out

        self.cls._precompute_ref_logps = timed
        return self

    def __exit__(self, *exc):
        self.cls._precompute_ref_logps = self.inner


def run(cfg: Config, base, rows, work: Path, steps: int, params: float, probe: RateProbe) -> None:
    name = f"{cfg.kind}-{len(cfg.seconds)}-{cfg.label.replace(' ', '_').replace(',', '')}"
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    store = RunStore(work / f"{name}.sqlite")
    settings = TrainSettings(
        kind=cfg.kind, max_steps=steps, batch_size=BATCH, max_length=SEQ, lora={"r": 16},
        export_gguf=False, save_steps=10_000, **cfg.settings,
    )
    fn = train_sft if cfg.kind == "sft" else train_dpo
    keep = (batching.make_padding_free, lm_head.labelled_positions_only, packing.use_segment_attention,
            lm_head_fold.in_place_folds, dropout.use_gap_dropout, lora_forward.use_fused_lora,
            lm_head_fold.narrow_cpu_tiles, lm_head_kept.kept_cpu_tiles, packing.float32_attention)
    if cfg.padded:
        batching.make_padding_free = lambda trainer: False
    if cfg.all_positions:
        lm_head.labelled_positions_only = lambda: contextlib.nullcontext(False)
    if cfg.plain_attention:
        packing.use_segment_attention = lambda model: False
    if cfg.trl_folds:
        lm_head_fold.in_place_folds = lambda: contextlib.nullcontext(False)
    if cfg.torch_dropout:
        dropout.use_gap_dropout = lambda model: 0
    if cfg.peft_forward:
        lora_forward.use_fused_lora = lambda model: 0
    if cfg.wide_tiles:
        lm_head_fold.narrow_cpu_tiles = lambda: contextlib.nullcontext(False)
    if cfg.recomputed_tiles:
        lm_head_kept.kept_cpu_tiles = lambda: contextlib.nullcontext(False)
    if cfg.bf16_attention:
        packing.float32_attention = packing._segment_attention
    try:
        with RefTimer() as ref:
            fn(base, rows, settings, out, store=store, name=name, quiet=True, callbacks=[probe])
    finally:
        (batching.make_padding_free, lm_head.labelled_positions_only, packing.use_segment_attention,
         lm_head_fold.in_place_folds, dropout.use_gap_dropout, lora_forward.use_fused_lora,
         lm_head_fold.narrow_cpu_tiles, lm_head_kept.kept_cpu_tiles, packing.float32_attention) = keep
    steps_done = store.train_steps(name)
    store.close()
    timed = steps_done[1:] or steps_done  # the first step pays one-off costs
    precomputed = ref.seconds > 0
    # precomputed: the reference pass is part of the work; spread over the steps it served
    ref_share = ref.seconds * len(timed) / len(steps_done) if precomputed else 0.0
    real0, total0 = cfg.real, cfg.total_s
    for s in timed:
        cfg.seconds.append(s["seconds"] + (ref.seconds / len(steps_done) if precomputed else 0.0))
        cfg.tokens += s["tokens"]
        cfg.real += s["real_tokens"]
        cfg.flops += 4 * params * s["real_tokens"]
        if cfg.kind == "dpo" and not precomputed:
            cfg.flops += 2 * params * s["real_tokens"]
        cfg.total_s += s["seconds"]
    if precomputed:
        cfg.ref_s.append(ref.seconds)
        cfg.flops += 2 * params * ref.tokens * len(timed) / len(steps_done)
        cfg.total_s += ref_share
    cfg.run_tps.append((cfg.real - real0) / (cfg.total_s - total0))


def paired(plan: Config | None, cfg: Config) -> str:
    """The plan's tokens/s over ``cfg``'s: the median ratio, and how often the plan was faster.

    Round by round, or with ``--flanked`` run by run against the plan runs beside each
    (``Config.flanked``). Runs of one round are minutes apart, so even the ratio within a
    round cancels most of a shared machine's drift, which moves whole-run means by more
    than the choices differ.
    """
    if plan is None or plan is cfg:
        return ""
    ratios = cfg.flanked or [p / c for p, c in zip(plan.run_tps, cfg.run_tps, strict=True)]
    return f"{statistics.median(ratios):.2f} (faster in {sum(r > 1 for r in ratios)} of {len(ratios)})"


def flank(plan: Config, variants: list[Config]) -> list[Config]:
    """``plan, v1, plan, v2, ..., plan``: every variant between two runs of the plan."""
    out = [plan]
    for v in variants:
        out += [v, plan]
    return out


def configs(auto: dict[str, dict]) -> list[Config]:
    out = []
    grid = [("fp32", "fp32", False), ("bf16", "bf16", False), ("fp32 + ckpt", "fp32", True), ("bf16 + ckpt", "bf16", True)]
    for label, precision, ckpt in grid:
        out.append(Config("sft", label, {"precision": precision, "gradient_checkpointing": ckpt}))
    out.append(Config("sft", "bf16, padded", {"precision": "bf16", "gradient_checkpointing": False}, padded=True))
    for label, precision, ckpt in grid:
        for pre in (True, False):
            out.append(
                Config("dpo", f"{label}, ref {'precomputed' if pre else 'every step'}",
                       {"precision": precision, "gradient_checkpointing": ckpt, "precompute_ref": pre})
            )
    # at the automatic plan, each layout choice off: the LM head as TRL runs it off Triton devices,
    # and SDPA's mask (padding-free SFT: one block-diagonal mask; DPO: padded pairs) instead of packing.py
    sft, dpo = auto["sft"], auto["dpo"]
    pre = "precomputed" if dpo["precompute_ref"] else "every step"
    for kind, plan, label in (("sft", sft, sft["precision"]), ("dpo", dpo, f"{dpo['precision']}, ref {pre}")):
        out.append(Config(kind, f"{label}, every position scored", dict(plan), all_positions=True))
        out.append(Config(kind, f"{label}, SDPA mask" + (", padded" if kind == "dpo" else ""), dict(plan),
                          plain_attention=True))
        out.append(Config(kind, f"{label}, TRL's folds", dict(plan), trl_folds=True))
        out.append(Config(kind, f"{label}, PEFT's LoRA forward", dict(plan), peft_forward=True))
        out.append(Config(kind, f"{label}, 32,768-column tiles", dict(plan), wide_tiles=True))
        out.append(Config(kind, f"{label}, tiles projected twice", dict(plan), recomputed_tiles=True))
        if plan["precision"] == "bf16":
            out.append(Config(kind, f"{label}, bf16 attention", dict(plan), bf16_attention=True))
    out.append(Config("sft", f"{sft['precision']}, torch dropout", dict(sft), torch_dropout=True))
    for c in out:
        a = auto[c.kind]
        c.is_auto = (
            c.settings["precision"] == a["precision"]
            and c.settings["gradient_checkpointing"] == a["gradient_checkpointing"]
            and c.settings.get("precompute_ref") == a.get("precompute_ref")
            and not c.padded
            and not c.plan_choice_off
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; every configuration runs once per round")
    ap.add_argument("--only", choices=["sft", "dpo"], help="one kind of step only")
    ap.add_argument("--match", help="only the configurations whose 'kind label' contains this text "
                                    "(with --plan-only: the plan, and the variants that contain it)")
    pick = ap.add_mutually_exclusive_group()
    pick.add_argument("--plan-only", action="store_true",
                      help="only failforge's own plan and its variants with a layout choice off")
    pick.add_argument("--grid", action="store_true",
                      help="only the precision, checkpointing and reference grid (no layout variants)")
    ap.add_argument("--flanked", action="store_true",
                    help="with --plan-only: the plan runs before and after every variant, each variant "
                         "compared with the two plan runs beside it")
    args = ap.parse_args()
    if args.flanked and not args.plan_only:
        ap.error("--flanked needs --plan-only")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from failforge.train.dpo import precompute_reference

    threads = device.cpu_count()
    print(f"threads {threads}, torch {torch.__version__}, {device.cpu_identity()['model']} [{device.cpu_identity()['flags']}]")
    rates = device.measure_matmul(threads, n=1024, rounds=6, seconds=0.1)
    print(f"matmul (1024^3, best of 6): fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s"
          f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    # the rate moves with the machine's other work: it is measured again before every run, and the
    # bound is the best rate seen over the whole bench (the highest bound, so the lowest fraction)
    seen = {k: [v] for k, v in rates.items()}

    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    params = float(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base.checkpoint)).num_parameters())
    sft_data, dpo_data = sft_rows(BATCH * 4), dpo_rows(BATCH * 2)
    plan = device.plan_device(TrainSettings(max_length=SEQ, batch_size=BATCH), checkpoint=base.checkpoint)
    dpo_plan = device.plan_device(TrainSettings(kind="dpo", max_length=SEQ, batch_size=BATCH), checkpoint=base.checkpoint,
                                  sequences_per_row=2)
    auto_pre, why = precompute_reference(TrainSettings(kind="dpo", max_steps=args.steps, batch_size=BATCH), len(dpo_data))
    print(f"failforge's own choice: SFT {plan.describe()}")
    print(f"                        DPO {dpo_plan.precision}, checkpointing {dpo_plan.gradient_checkpointing}, "
          f"reference precomputed: {auto_pre} ({why})")
    print(f"params {params / 1e6:.1f} M; SFT {len(sft_data)} rows, DPO {len(dpo_data)} pairs; batch {BATCH}, "
          f"max {SEQ} tokens a row, {args.steps} steps a run, {args.rounds} rounds", flush=True)

    all_cfgs = configs({
        "sft": {"precision": plan.precision, "gradient_checkpointing": plan.gradient_checkpointing},
        "dpo": {"precision": dpo_plan.precision, "gradient_checkpointing": dpo_plan.gradient_checkpointing,
                "precompute_ref": auto_pre},
    })
    if args.only:
        all_cfgs = [c for c in all_cfgs if c.kind == args.only]
    def matches(c: Config) -> bool:
        return not args.match or args.match in f"{c.kind} {c.label}"

    if args.grid:
        all_cfgs = [c for c in all_cfgs if not c.plan_choice_off]
    if args.plan_only:  # the plan always, beside the variants that match
        all_cfgs = [c for c in all_cfgs if c.is_auto or (c.plan_choice_off and matches(c))]
    else:
        all_cfgs = [c for c in all_cfgs if matches(c)]
    work = Path(tempfile.mkdtemp(prefix="failforge-bench-"))
    try:
        plans = {c.kind: c for c in all_cfgs if c.is_auto}
        for r in range(args.rounds):
            order = all_cfgs if r % 2 == 0 else all_cfgs[::-1]  # alternate the order too
            if args.flanked:  # plan, variant, plan, variant, ..., plan: for each kind
                order = [c for kind in dict.fromkeys(c.kind for c in order) for c in
                         flank(plans[kind], [v for v in order if v.kind == kind and not v.is_auto])]
            pending: Config | None = None  # --flanked: the variant that waits for the plan run after it
            for cfg in order:
                before = device.measure_matmul(threads, n=1024, rounds=3, seconds=0.1, precisions=(cfg.precision,))
                t0, s0 = time.perf_counter(), cfg.total_s
                probe = RateProbe(cfg.precision, threads)
                run(cfg, base, sft_data if cfg.kind == "sft" else dpo_data, work, args.steps, params, probe)
                after = device.measure_matmul(threads, n=1024, rounds=3, seconds=0.1, precisions=(cfg.precision,))
                around = [before[cfg.precision], *probe.rates, after[cfg.precision]]
                seen[cfg.precision] += around
                cfg.rate_s += (cfg.total_s - s0) * statistics.mean(around)
                print(f"  round {r + 1}  {cfg.kind.upper():4} {cfg.label:36} steps {', '.join(f'{s:.2f}' for s in cfg.seconds[-(args.steps - 1) or -1:])} s"
                      f"  (wall {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
                if args.flanked and cfg.is_auto and pending is not None:
                    beside = statistics.mean(cfg.run_tps[-2:])  # the plan runs just before and after it
                    pending.flanked.append(beside / pending.run_tps[-1])
                    pending = None
                elif args.flanked and not cfg.is_auto:
                    pending = cfg
        print()
        for k, v in seen.items():
            if len(v) > 1:
                print(f"matmul {k} over the bench ({len(v)} measurements): best {max(v):.0f}, median "
                      f"{statistics.median(v):.0f}, lowest {min(v):.0f} GFLOP/s; 'FLOP bound' below uses the best, "
                      f"'at its rate' the mean of the measurements before, during and after each run")
        bound_rate = {k: max(v) for k, v in seen.items()}
        paired_by = "the plan runs beside each of its runs" if args.flanked else "per round"
        print(f"| step | configuration | s/step | tokens/s | real tokens | FLOP bound | at its rate | plan's speed over this, {paired_by} | |")
        print("|---|---|---|---|---|---|---|---|---|")
        for cfg in all_cfgs:
            med = statistics.median(cfg.seconds)
            tps = cfg.real / cfg.total_s
            bound = cfg.flops / cfg.total_s / 1e9 / bound_rate[cfg.precision]
            ref = f" (reference pass {statistics.median(cfg.ref_s):.1f} s, spread over the steps)" if cfg.ref_s else ""
            local = cfg.flops / 1e9 / cfg.rate_s
            print(f"| {cfg.kind.upper()} | {cfg.label} | {med:.2f} | {tps:.0f} | {cfg.real / cfg.tokens:.0%} | "
                  f"{bound:.2f} | {local:.2f} | {paired(plans.get(cfg.kind), cfg)} | {'auto' if cfg.is_auto else ''}{ref} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
