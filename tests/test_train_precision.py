"""Same learning in fp32 and in the precision failforge picks: losses step by step, greedy answers of the GGUFs.

The chosen precision is what ``precision: auto`` resolves to on this machine (bf16
autocast on a CPU with fast bf16); where that is fp32, bf16 is compared instead, so
the test always compares two precisions. Both runs start from the same seed, the
same rows and the same LoRA initialisation.
"""

from __future__ import annotations

import math

import pytest

from failforge.models.registry import resolve_weights
from failforge.run.store import RunStore
from failforge.train import TrainSettings, train_dpo, train_sft, version_from_gguf
from failforge.train.device import plan_device

pytestmark = pytest.mark.slow

#: |loss(fp32) - loss(other)| per step, relative to the fp32 loss. bf16 keeps 8 bits of
#: mantissa: logits of the frozen base differ by up to ~0.6 (of ~30) from fp32 ones.
LOSS_RTOL = 0.05
#: DPO losses start at ln 2 in both precisions; later steps within this absolute gap
DPO_ATOL = 0.05

SFT_ROWS = [
    {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
    for i in range(8)
]
DPO_ROWS = [
    {"prompt": [{"role": "user", "content": f"Ask me a question about the number {i}."}],
     "chosen": f"What is {i} times {i + 7}?", "rejected": "Hello."}
    for i in range(8)
]
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
    worst = max(abs(x - y) / x for x, y in zip(a, b, strict=True))
    print(f"SFT fp32 {a} / {other_precision} {b}: worst relative gap {worst:.4f}")
    assert worst <= LOSS_RTOL


def test_dpo_losses_agree_step_by_step(trained, other_precision):
    _, store = trained
    a, b = losses(store, "dpo-fp32"), losses(store, f"dpo-{other_precision}")
    assert a[0] == pytest.approx(math.log(2), abs=1e-4) and b[0] == pytest.approx(math.log(2), abs=1e-3)
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    print(f"DPO fp32 {a} / {other_precision} {b}: worst gap {worst:.4f}")
    assert worst <= DPO_ATOL


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
    # measured on the 2-core AVX512-BF16 machine: all equal (docs/training.md)
    assert same >= len(PROMPTS) - 1
