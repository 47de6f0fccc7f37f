"""Same learning in fp32 and in the precision failforge picks: losses step by step, greedy answers of the GGUFs.

The chosen precision is what ``precision: auto`` resolves to on this machine (bf16
autocast on a CPU with fast bf16); where that is fp32, bf16 is compared instead, so
the test always compares two precisions. Both runs start from the same seed, the
same rows and the same LoRA initialisation.
"""

from __future__ import annotations

import math

import pytest
from train_rows import DPO_ROWS, SFT_ROWS

from failforge.models.registry import resolve_weights
from failforge.run.store import RunStore
from failforge.train import TrainSettings, train_dpo, train_sft, version_from_gguf
from failforge.train.device import plan_device

pytestmark = pytest.mark.slow

#: step 1 sees the same weights in both precisions: its losses differ only by the
#: forward pass's rounding (bf16 keeps 8 bits of mantissa; measured 1.7 %)
FIRST_STEP_RTOL = 0.03
#: later steps: |loss(fp32) - loss(other)| / loss(fp32). The early LoRA updates are
#: small next to the frozen weights' outputs, and bf16 rounds part of them away in the
#: forward pass, so the bf16 loss falls more slowly at first (measured up to 30 % at
#: steps 2-4 at the shipped learning rate; docs/training.md)
LATER_STEP_RTOL = 0.35
#: the two trained adapters evaluated alike (fp32, merged, as the GGUF export sees them):
#: their mean loss on the training rows, relative to fp32's
EVAL_RTOL = 0.10
#: DPO losses start at ln 2 in both precisions; later steps within this absolute gap.
#: DPO's loss is made of exactly the small policy-reference differences that bf16
#: rounds: measured fp32 0.693, 0.579, 0.501, 0.450 against bf16 0.693, 0.667, 0.663,
#: 0.641 (gap 0.19 at step 4, lr 5e-5). That is the logged loss, not what was learned:
#: see DPO_EVAL_RTOL
DPO_ATOL = 0.25
#: the two trained DPO adapters evaluated alike (fp32, merged, each against its own
#: reference, the adapter-off model): their mean DPO loss on the training pairs, relative
#: to fp32's (measured from one fp32 SFT version: fp32-trained 0.430, bf16-trained 0.432)
DPO_EVAL_RTOL = 0.10

PROMPTS = ["What is 3 plus 3?", "What is 5 plus 5?", "What is 12 plus 12?", "Name a colour.", "What is 7 plus 7?"]


def settings(precision: str, **kw) -> TrainSettings:
    return TrainSettings(
        # the shipped configs' learning rate (SFT); every step sees new rows (one epoch)
        **{"max_steps": 4, "batch_size": 2, "learning_rate": 2e-4, "lora": {"r": 8}, "precision": precision,
           "export_gguf": True, "seed": 3, **kw}
    )


@pytest.fixture(scope="module")
def other_precision() -> str:
    chosen = plan_device(TrainSettings()).precision
    return chosen if chosen != "fp32" else "bf16"


@pytest.fixture(scope="module")
def trained(other_precision, tmp_path_factory):
    base = version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")
    root = tmp_path_factory.mktemp("precision")
    store = RunStore(root / "run.sqlite")
    store.set_meta(train_threads=2)  # the same thread count for both runs
    out = {}
    for precision in ("fp32", other_precision):
        sft = train_sft(base, SFT_ROWS, settings(precision), root / f"sft-{precision}", store=store, name=f"sft-{precision}", quiet=True)
        dpo = train_dpo(sft, DPO_ROWS, settings(precision, kind="dpo", beta=0.1, learning_rate=5e-5, export_gguf=False),
                        root / f"dpo-{precision}", store=store, name=f"dpo-{precision}", quiet=True)
        out[precision] = (sft, dpo)
    yield out, store
    store.close()


def losses(store, name):
    return [s["loss"] for s in store.train_steps(name)]


def test_sft_losses_agree_step_by_step(trained, other_precision):
    _, store = trained
    a, b = losses(store, "sft-fp32"), losses(store, f"sft-{other_precision}")
    assert len(a) == len(b) == 4 and all(math.isfinite(x) for x in a + b)
    gaps = [abs(x - y) / x for x, y in zip(a, b, strict=True)]
    print(f"SFT fp32 {a} / {other_precision} {b}: relative gaps {[round(g, 4) for g in gaps]}")
    assert gaps[0] <= FIRST_STEP_RTOL
    assert max(gaps[1:]) <= LATER_STEP_RTOL


def fp32_loss(version) -> float:
    """Mean loss per answer token on SFT_ROWS of a version merged in fp32 (what the GGUF export writes)."""
    import torch

    from failforge.train.sft import load_merged

    model, tok = load_merged(version.checkpoint, version.adapter)
    total = tokens = 0.0
    for row in SFT_ROWS:
        prompt = tok.apply_chat_template(row["messages"][:1], add_generation_prompt=True, return_dict=True)["input_ids"]
        ids = tok.apply_chat_template(row["messages"], return_dict=True)["input_ids"]
        labels = torch.tensor([[-100] * len(prompt) + ids[len(prompt):]])
        with torch.no_grad():
            loss = model(torch.tensor([ids]), labels=labels).loss.item()
        n = int((labels != -100).sum()) - 1
        total, tokens = total + loss * n, tokens + n
    return total / tokens


def test_sft_adapters_evaluate_alike_in_fp32(trained, other_precision):
    versions, _ = trained
    a, b = fp32_loss(versions["fp32"][0]), fp32_loss(versions[other_precision][0])
    print(f"SFT adapters evaluated in fp32 on the training rows: fp32-trained {a:.4f}, {other_precision}-trained {b:.4f}")
    assert abs(a - b) / a <= EVAL_RTOL


def test_dpo_losses_agree_step_by_step(trained, other_precision):
    _, store = trained
    a, b = losses(store, "dpo-fp32"), losses(store, f"dpo-{other_precision}")
    assert a[0] == pytest.approx(math.log(2), abs=1e-4) and b[0] == pytest.approx(math.log(2), abs=1e-3)
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    print(f"DPO fp32 {a} / {other_precision} {b}: worst gap {worst:.4f}")
    assert worst <= DPO_ATOL


def completion_logprob(model, tok, prompt: list[dict], completion: str) -> float:
    """log p(completion + EOS | prompt under the chat template), in fp32."""
    import torch

    head = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    ids = torch.tensor([head + tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return logp.gather(-1, ids[0, 1:].unsqueeze(-1))[len(head) - 1:].sum().item()


def fp32_dpo_loss(version, beta: float = 0.1) -> tuple[float, float]:
    """Mean sigmoid DPO loss and mean reward margin on DPO_ROWS of a DPO version merged in fp32,
    against its reference (the same checkpoint with the adapter off)."""
    import torch
    import torch.nn.functional as F

    from failforge.train.sft import load_merged

    def scores(adapter):
        model, tok = load_merged(version.checkpoint, adapter)
        return [(completion_logprob(model, tok, r["prompt"], r["chosen"]),
                 completion_logprob(model, tok, r["prompt"], r["rejected"])) for r in DPO_ROWS]

    ref, policy = scores(None), scores(version.adapter)
    margins = torch.tensor([(pc - rc) - (pr - rr) for (pc, pr), (rc, rr) in zip(policy, ref, strict=True)])
    return F.softplus(-beta * margins).mean().item(), margins.mean().item()


def test_dpo_adapters_evaluate_alike_in_fp32(trained, other_precision):
    versions, _ = trained
    (a, margin_a), (b, margin_b) = fp32_dpo_loss(versions["fp32"][1]), fp32_dpo_loss(versions[other_precision][1])
    print(f"DPO adapters evaluated in fp32 on the training pairs: fp32-trained loss {a:.4f} (margin {margin_a:.2f}), "
          f"{other_precision}-trained {b:.4f} (margin {margin_b:.2f}); untrained {math.log(2):.4f}")
    assert a < math.log(2) - 0.1 and b < math.log(2) - 0.1  # both learned: the policy prefers the chosen answers
    assert abs(a - b) / a <= DPO_EVAL_RTOL


def test_merged_ggufs_give_the_same_greedy_answers(trained, other_precision):
    import llama_cpp

    versions, _ = trained
    answers = {}
    for precision, (sft, _) in versions.items():
        llm = llama_cpp.Llama(sft.gguf, n_ctx=256, verbose=False, n_threads=2, seed=0)
        try:
            answers[precision] = [
                llm.create_chat_completion([{"role": "user", "content": p}], max_tokens=16, temperature=0.0)["choices"][0]["message"]["content"]
                for p in PROMPTS
            ]
        finally:
            llm.close()
    same = sum(x == y for x, y in zip(answers["fp32"], answers[other_precision], strict=True))
    print(f"greedy answers equal on {same}/{len(PROMPTS)} prompts: {answers}")
    # measured on the 2-core AVX512-BF16 machine: 5 of 5 equal (docs/training.md)
    assert same >= len(PROMPTS) - 1
