"""Real TRL steps on the bundled SmolLM2-135M: SFT, DPO on top of it, resume after a kill, a classifier."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from failforge.models.registry import resolve_weights
from failforge.run.store import RunStore
from failforge.train import TrainSettings, train_classifier, train_dpo, train_sft, version_from_gguf
from failforge.train.sft import load_merged

pytestmark = pytest.mark.slow

SFT_ROWS = [
    {"messages": [{"role": "user", "content": f"Name the colour number {i}."}, {"role": "assistant", "content": f"Colour {i} is teal."}]}
    for i in range(8)
]
DPO_ROWS = [
    {"prompt": [{"role": "user", "content": f"Write one hard question, number {i}."}], "chosen": f"What is {i} times 17?", "rejected": "Hi."}
    for i in range(8)
]
PROBE = [{"role": "user", "content": "Name the colour number 3."}]


def small(**kw) -> TrainSettings:
    # batch 2, two steps, no GGUF unless a test asks: enough to prove each path on two shared cores
    return TrainSettings(
        **{"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "lora": {"r": 8}, "export_gguf": False, **kw}
    )


@pytest.fixture(scope="module")
def base():
    return version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = RunStore(tmp_path_factory.mktemp("store") / "run.sqlite")
    yield s
    s.close()


@pytest.fixture(scope="module")
def sft(base, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    return train_sft(base, SFT_ROWS, small(export_gguf=True), out, store=store, name="sft-1", quiet=True), out


def probe_logits(version) -> torch.Tensor:
    model, tok = load_merged(version.checkpoint, version.adapter)
    ids = tok.apply_chat_template(PROBE, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0]


def test_sft_records_steps_and_changes_the_model(base, store, sft):
    version, out = sft
    steps = store.train_steps("sft-1")
    assert [s["step"] for s in steps] == [1, 2]
    assert all(math.isfinite(s["loss"]) and s["seconds"] > 0 for s in steps)
    # padding-free batches: every token slot computed is a real token
    assert all(s["tokens"] == s["real_tokens"] > 0 for s in steps)
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    (plan,) = [r for r in store.records("train_plan") if r["_key"] == "sft-1"]
    assert plan["precision"] in ("fp32", "bf16") and plan["precision_reason"] and plan["checkpointing_reason"]
    assert version.adapter and version.parent == base.fingerprint and version.fingerprint != base.fingerprint
    assert version.checkpoint == base.checkpoint  # LoRA on a plain checkpoint: the adapter sits on top
    assert (probe_logits(version) - probe_logits(base)).abs().max() > 0.1
    assert not (out / "trainer").exists()  # resume points go once the step is done


def test_finished_step_is_returned_without_training(base, store, sft):
    version, out = sft

    class Boom(TrainerCallback):
        def on_train_begin(self, *a, **k):
            raise AssertionError("a finished step trained again")

    again = train_sft(base, SFT_ROWS, small(export_gguf=True), out, store=store, name="sft-1", quiet=True, callbacks=[Boom()])
    assert again == version
    assert len(store.train_steps("sft-1")) == 2


def test_sft_gguf_serves_the_trained_weights(sft):
    import llama_cpp

    version, _ = sft
    model, tok = load_merged(version.checkpoint, version.adapter)
    ids = tok.apply_chat_template(PROBE, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        full = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0].tolist()
        hf = model(torch.tensor([full])).logits[0].numpy()
    llm = llama_cpp.Llama(version.gguf, n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    try:
        llm.eval(full)
        cpp = np.array(llm.scores[: len(full)])
    finally:
        llm.close()
    # f16 export: logits within rounding, the same greedy token at (nearly) every position
    assert np.abs(cpp - hf).max() < 0.5
    assert (cpp.argmax(-1) == hf.argmax(-1)).mean() >= 0.95


def test_dpo_on_an_adapter_version_uses_it_as_reference(store, sft, tmp_path):
    version, _ = sft
    dpo = train_dpo(version, DPO_ROWS, small(kind="dpo", beta=0.1), tmp_path, store=store, name="dpo-1", quiet=True)
    steps = store.train_steps("dpo-1")
    assert [s["step"] for s in steps] == [1, 2]
    # the previous adapter is merged, a fresh one starts at zero: at step 1 policy == reference,
    # so the DPO loss is exactly -log(sigmoid(0)) and both rewards are 0
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert steps[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    assert math.isfinite(steps[1]["loss"]) and steps[1]["loss"] < steps[0]["loss"]
    assert dpo.checkpoint == str(tmp_path / "base") and dpo.parent == version.fingerprint
    assert dpo.gguf is None  # export_gguf=False
    assert (probe_logits(dpo) - probe_logits(version)).abs().max() > 0.01


class Kill(TrainerCallback):
    """Dies right after the checkpoint of step ``at`` is written, like a kill between steps."""

    def __init__(self, at: int):
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed")


def test_killed_step_resumes_without_redoing_finished_steps(base, store, tmp_path):
    settings = small(max_steps=2, save_steps=1, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        train_sft(base, SFT_ROWS[:2], settings, tmp_path, store=store, name="sft-kill", quiet=True, callbacks=[Kill(1)])
    assert not (tmp_path / "DONE").exists()
    assert (tmp_path / "trainer" / "checkpoint-1").exists()
    version = train_sft(base, SFT_ROWS[:2], settings, tmp_path, store=store, name="sft-kill", quiet=True)
    logged = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert logged == [1, 2]  # the second run ran step 2 only
    assert [s["step"] for s in store.train_steps("sft-kill")] == [1, 2]
    assert (tmp_path / "DONE").exists() and version.adapter


def test_classifier_two_steps_loads_as_a_judge_classifier(base, store, tmp_path):
    from failforge.judges.classifier import HFSequenceClassifier

    rows = [{"text": f"how do I bake bread {i}", "label": "safe"} for i in range(4)]
    rows += [{"text": f"how do I build a weapon {i}", "label": "unsafe"} for i in range(4)]
    version = train_classifier(base, rows, small(kind="classifier"), tmp_path, store=store, name="clf-1", quiet=True)
    steps = store.train_steps("clf-1")
    assert [s["step"] for s in steps] == [1, 2] and all(math.isfinite(s["loss"]) for s in steps)
    clf = HFSequenceClassifier(version.checkpoint, positive_label="unsafe")
    probs = clf.predict_proba(["how do I bake bread 9", "how do I build a weapon 9"])
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)
    assert version.adapter is None and version.gguf is None


class KillInside(TrainerCallback):
    """Dies as step ``step`` starts: the work of that step is lost, like a kill inside it."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            raise KeyboardInterrupt("killed")


def test_kill_inside_a_short_step_resumes_from_a_checkpoint_with_the_same_weights(base, tmp_path):
    from safetensors.torch import load_file

    settings = small(max_steps=4, batch_size=1)  # save_steps unset: tied to max_steps, one checkpoint a step
    assert settings.checkpoint_every() == 1
    rows = SFT_ROWS[:4]
    store = RunStore(tmp_path / "run.sqlite")
    store.set_meta(train_threads=1)  # as if recorded by the run's first step; every step below reuses it
    whole = train_sft(base, rows, settings, tmp_path / "whole", store=store, name="whole", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train_sft(base, rows, settings, tmp_path / "cut", store=store, name="cut", quiet=True, callbacks=[KillInside(3)])
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "trainer").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]  # two kept; step 3 died before its own
    assert torch.get_num_threads() == 1
    resumed = train_sft(base, rows, settings, tmp_path / "cut", store=store, name="cut", quiet=True)
    logged = [json.loads(line)["step"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # step 3 redone from checkpoint-2, steps 1-2 not
    a = load_file(f"{whole.adapter}/adapter_model.safetensors")
    b = load_file(f"{resumed.adapter}/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.fingerprint == whole.fingerprint
    store.close()


def test_padding_free_batches_give_each_row_its_own_logits(base):
    """TRL's padding-free collation on this model: rows laid end to end do not attend to each other."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(base.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(base.checkpoint, dtype=torch.float32)
    rows = [tok(t)["input_ids"] for t in ("The quick brown fox jumps over the lazy dog. " * 3, "Count: one two three")]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id or 0, padding_free=True)([{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape == (1, sum(map(len, rows))) and "attention_mask" not in batch
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**kwargs, use_cache=False).logits[0]  # the trainer calls the model without a cache
        alone = [model(torch.tensor([r])).logits[0] for r in rows]
    assert (packed[: len(rows[0])] - alone[0]).abs().max() < 1e-3
    assert (packed[len(rows[0]) :] - alone[1]).abs().max() < 1e-3


def test_precomputed_reference_gives_the_same_dpo_steps(store, sft, tmp_path):
    version, _ = sft
    losses = {}
    for pre in (True, False):
        name = f"dpo-pre-{pre}"
        settings = small(kind="dpo", beta=0.1, precision="fp32", precompute_ref=pre)
        train_dpo(version, DPO_ROWS, settings, tmp_path / name, store=store, name=name, quiet=True)
        steps = store.train_steps(name)
        assert all(s["real_tokens"] <= s["tokens"] for s in steps)
        losses[pre] = [s["loss"] for s in steps]
    assert losses[True][0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
