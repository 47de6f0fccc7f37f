"""Pure logic of the training package: row validation, device plans, step folders, the Q/K permutation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from failforge.errors import ConfigError, DatasetError
from failforge.train import ModelVersion, TrainSettings, plan_device
from failforge.train.checkpointing import StepDir, atomic_dir, data_hash
from failforge.train.classifier import classifier_rows
from failforge.train import device
from failforge.train.dpo import dpo_rows, precompute_reference
from failforge.train.gguf_export import _llama_permute
from failforge.run.store import RunStore
from failforge.train.sft import sft_rows, trainer_args
from failforge.train.threads import run_threads

BASE = ModelVersion(name="base", checkpoint="/nowhere", fingerprint="f00")


def test_sft_rows_messages_become_prompt_completion_on_the_last_assistant_turn():
    rows = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        }
    ]
    (out,) = sft_rows(rows)
    assert [m["content"] for m in out["prompt"]] == ["hi", "hello", "2+2?"]
    assert out["completion"] == [{"role": "assistant", "content": "4"}]


def test_sft_rows_prompt_completion_forms():
    plain = sft_rows([{"prompt": "Examples:\n1. a\n2. b\n3.", "completion": " c"}])
    assert plain == [{"prompt": "Examples:\n1. a\n2. b\n3.", "completion": " c"}]
    chat = sft_rows([{"prompt": [{"role": "user", "content": "q"}], "completion": "a"}])
    assert chat[0]["completion"] == [{"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    "rows, needle",
    [
        ([], "no training rows"),
        ([{"text": "x"}], "sft row 0: needs 'messages'"),
        ([{"messages": [{"role": "user", "content": "q"}]}], "must end with an assistant turn"),
        ([{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}], "bad message"),
        ([{"prompt": "q", "completion": ["a"]}], "expected a string"),
        (
            [{"prompt": "q", "completion": "a"}, {"prompt": [{"role": "user", "content": "q"}], "completion": "a"}],
            "mix chat prompts and plain-text",
        ),
    ],
)
def test_sft_rows_errors_name_the_row_and_problem(rows, needle):
    with pytest.raises(DatasetError, match=needle):
        sft_rows(rows)


def test_dpo_rows():
    out = dpo_rows([{"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}])
    assert out[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    with pytest.raises(DatasetError, match="dpo row 0: missing rejected"):
        dpo_rows([{"prompt": "q", "chosen": "a"}])
    with pytest.raises(DatasetError, match="dpo row 0: chosen and rejected are the same"):
        dpo_rows([{"prompt": "q", "chosen": "a", "rejected": "a"}])


def test_classifier_rows_map_labels_to_indices():
    rows, labels = classifier_rows([{"text": "a", "label": "unsafe"}, {"text": "b", "label": "safe"}], None)
    assert labels == ["safe", "unsafe"]
    assert [r["label"] for r in rows] == [1, 0]
    rows, labels = classifier_rows([{"text": "a", "label": 1}], ["no", "yes"])
    assert rows == [{"text": "a", "label": 1}]
    with pytest.raises(DatasetError, match="not one of"):
        classifier_rows([{"text": "a", "label": "maybe"}], ["no", "yes"])
    with pytest.raises(DatasetError, match="integer labels need the label names"):
        classifier_rows([{"text": "a", "label": 0}], None)


def _fake_rates(monkeypatch, fp32: float, bf16: float):
    monkeypatch.setattr(device, "cpu_matmul_rates", lambda threads: {"fp32": fp32, "bf16": bf16, "threads": threads})


def test_cpu_precision_follows_the_measured_matmul_rates(monkeypatch):
    _fake_rates(monkeypatch, fp32=173, bf16=409)  # native bf16 (AVX512-BF16 / AMX)
    plan = plan_device(TrainSettings(), device="cpu", threads=2)
    assert (plan.bf16, plan.fp16, plan.precision) == (True, False, "bf16")
    assert "bf16 409 GFLOP/s" in plan.precision_reason and "2.4x faster" in plan.precision_reason
    assert plan.trainer_kwargs()["bf16"] is True and plan.trainer_kwargs()["use_cpu"] is True
    dpo = plan_device(TrainSettings(kind="dpo"), device="cpu", threads=2)  # DPO by the same rule
    assert dpo.precision == "bf16" and dpo.precision_reason == plan.precision_reason
    assert not plan_device(TrainSettings(kind="dpo", precision="fp32"), device="cpu").bf16  # unless told otherwise
    _fake_rates(monkeypatch, fp32=173, bf16=90)  # bf16 emulated: slower than fp32
    plan = plan_device(TrainSettings(), device="cpu", threads=2)
    assert plan.precision == "fp32" and "not 1.3x faster" in plan.precision_reason
    _fake_rates(monkeypatch, fp32=173, bf16=200)  # within the margin: not worth the casts
    assert plan_device(TrainSettings(), device="cpu").precision == "fp32"


def test_explicit_precision_and_checkpointing_win(monkeypatch):
    _fake_rates(monkeypatch, fp32=173, bf16=409)
    plan = plan_device(TrainSettings(precision="fp32", gradient_checkpointing=True), device="cpu")
    assert (plan.precision, plan.gradient_checkpointing) == ("fp32", True)
    assert plan.precision_reason == "train.precision: fp32"
    assert plan.checkpointing_reason == "train.gradient_checkpointing: true"
    assert plan.trainer_kwargs()["activation_checkpointing"] is True
    assert plan_device(TrainSettings(precision="bf16"), device="cpu").bf16  # allowed, even where emulated


def test_a_precision_the_device_cannot_run_is_one_line_naming_option_and_device(monkeypatch):
    with pytest.raises(ConfigError, match=r"^train.precision: fp16 needs a CUDA GPU, this step runs on cpu$"):
        plan_device(TrainSettings(precision="fp16"), device="cpu")
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(ConfigError, match=r"^train.precision: bf16 is not supported by this GPU \(Tesla T4\)"):
        plan_device(TrainSettings(precision="bf16"), device="cuda")
    plan = plan_device(TrainSettings(), device="cuda")  # auto on that GPU: fp16
    assert plan.precision == "fp16" and "Tesla T4 has no bf16" in plan.precision_reason


def test_matmul_rates_are_measured_once_per_machine_and_cached(monkeypatch, tmp_path):
    calls = []

    def measure(threads):
        calls.append(threads)
        return {"fp32": 100.0, "bf16": 250.0}

    monkeypatch.setattr(device, "measure_matmul", measure)
    first = device.cpu_matmul_rates(2, cache_dir=tmp_path)
    again = device.cpu_matmul_rates(2, cache_dir=tmp_path)
    assert calls == [2] and first == again and first["bf16"] == 250.0
    device.cpu_matmul_rates(1, cache_dir=tmp_path)  # another thread count is another measurement
    assert calls == [2, 1] and len(list(tmp_path.glob("cpu-matmul-*.json"))) == 2
    (next(tmp_path.glob("cpu-matmul-*.json"))).write_text("{torn")  # a torn cache file is measured again
    device.cpu_matmul_rates(2, cache_dir=tmp_path)
    device.cpu_matmul_rates(1, cache_dir=tmp_path)
    assert len(calls) == 3


def test_the_real_matmul_micro_benchmark_is_short():
    import time

    t0 = time.perf_counter()
    rates = device.measure_matmul(threads=1, n=256, rounds=2, seconds=0.02)
    assert time.perf_counter() - t0 < 5 and rates["fp32"] > 0 and rates["bf16"] > 0


SMOL = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "vocab_size": 49152}


def test_checkpointing_turns_on_only_when_memory_requires_it(monkeypatch, tmp_path):
    _fake_rates(monkeypatch, fp32=173, bf16=90)
    (tmp_path / "config.json").write_text(json.dumps(SMOL))
    gib = 1024**3
    monkeypatch.setattr(device, "free_memory", lambda dev: 20.0 * gib)
    plan = plan_device(TrainSettings(kind="dpo"), device="cpu", checkpoint=tmp_path, sequences_per_row=2)
    assert not plan.gradient_checkpointing
    assert "8192 tokens a batch" in plan.checkpointing_reason and "20.0 GiB free" in plan.checkpointing_reason
    monkeypatch.setattr(device, "free_memory", lambda dev: 4.0 * gib)
    plan = plan_device(TrainSettings(kind="dpo"), device="cpu", checkpoint=tmp_path, sequences_per_row=2)
    assert plan.gradient_checkpointing
    # the estimate grows with the batch and halves its activations in bf16
    small = device.step_memory(SMOL, 1024, "fp32")
    assert device.step_memory(SMOL, 2048, "fp32") > small > device.step_memory(SMOL, 1024, "bf16")
    assert device.step_memory(SMOL, 1024, "fp32", lora=False) > small  # full fine-tuning: gradients, Adam
    # without a model config the old per-device default stands, with its reason
    plan = plan_device(TrainSettings(), device="cpu")
    assert not plan.gradient_checkpointing and "memory need unknown" in plan.checkpointing_reason


def test_the_plan_and_its_reasons_go_to_the_store_and_the_log(monkeypatch, tmp_path, caplog):
    _fake_rates(monkeypatch, fp32=173, bf16=409)
    store = RunStore(tmp_path / "run.sqlite")
    plan = plan_device(TrainSettings(), device="cpu", threads=2)
    with caplog.at_level("INFO", logger="failforge.train"):
        plan.record("proposer-1", store)
    (rec,) = store.records("train_plan")
    assert rec["_key"] == "proposer-1" and rec["precision"] == "bf16" and rec["gradient_checkpointing"] is False
    assert "bf16 is 2.4x faster" in rec["precision_reason"] and rec["checkpointing_reason"]
    assert "proposer-1: training on cpu, bf16 (matmul fp32 173 GFLOP/s" in caplog.text
    store.close()


@pytest.mark.parametrize(
    ("kw", "rows", "expected"),
    [
        ({"max_steps": 8, "batch_size": 4}, 12, True),  # 32 visits of 12 rows: each row scored once, not ~3 times
        ({"max_steps": 2, "batch_size": 4}, 12, False),  # 8 visits: precomputing would score 4 rows never trained on
        ({"epochs": 3}, 10, True),
        ({"epochs": 1}, 10, False),
        ({"epochs": 1, "precompute_ref": True}, 10, True),
        ({"max_steps": 8, "precompute_ref": False}, 4, False),
    ],
)
def test_dpo_reference_is_precomputed_when_rows_are_visited_more_than_once(kw, rows, expected):
    on, why = precompute_reference(TrainSettings(kind="dpo", **kw), rows)
    assert on is expected and why


def test_speed_settings_do_not_change_a_step_fingerprint(tmp_path):
    rows = [{"prompt": "q", "completion": "a"}]
    StepDir(tmp_path, "sft", BASE, TrainSettings(), rows).claim()
    for kw in ({"precompute_ref": True}, {"precision": "bf16"}, {"gradient_checkpointing": True}):
        StepDir(tmp_path, "sft", BASE, TrainSettings(**kw), rows).claim()  # no "settings differ"


def test_step_dir_refuses_a_folder_of_another_step(tmp_path):
    rows = [{"prompt": "q", "completion": "a"}]
    StepDir(tmp_path, "sft", BASE, TrainSettings(), rows).claim()
    StepDir(tmp_path, "sft", BASE, TrainSettings(save_steps=7), rows).claim()  # save_steps does not change weights
    with pytest.raises(ConfigError, match=r"\(data, rows differ\)"):
        StepDir(tmp_path, "sft", BASE, TrainSettings(), rows + rows).done()
    with pytest.raises(ConfigError, match=r"\(settings differ\)"):
        StepDir(tmp_path, "sft", BASE, TrainSettings(learning_rate=1e-3), rows).claim()


def test_resume_checkpoint_skips_one_cut_short(tmp_path):
    step = StepDir(tmp_path, "sft", BASE, TrainSettings(), [{"prompt": "q", "completion": "a"}])
    for n, complete in [(2, True), (4, True), (6, False)]:
        d = step.trainer_dir / f"checkpoint-{n}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": n}))
    (step.trainer_dir / "checkpoint-8").mkdir()
    (step.trainer_dir / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # torn write
    assert step.resume_checkpoint().endswith("checkpoint-4")


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    final = tmp_path / "adapter"
    with atomic_dir(final) as tmp:
        (tmp / "w").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "w").write_text("2")
            raise RuntimeError("killed")
    assert (final / "w").read_text() == "1"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_data_hash_depends_on_content_and_order():
    a, b = {"prompt": "x", "completion": "1"}, {"prompt": "y", "completion": "2"}
    assert data_hash([a, b]) != data_hash([b, a])
    assert data_hash([a, b]) == data_hash([dict(a), dict(b)])


def test_llama_permute_inverts_the_transformers_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    n_head, n_kv, head_dim, hidden = 9, 3, 8, 24
    proc = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv})
    rng = np.random.default_rng(0)
    for name, rows_, kv in [("blk.0.attn_q.weight", n_head * head_dim, n_head), ("blk.0.attn_k.weight", n_kv * head_dim, n_kv)]:
        stored = rng.standard_normal((rows_, hidden)).astype(np.float32)  # as a GGUF stores it
        hf = proc.process(stored.copy(), name).weights
        assert not np.array_equal(hf, stored)
        np.testing.assert_array_equal(_llama_permute(hf, n_head, kv), stored)


@pytest.mark.parametrize(
    ("max_steps", "save_steps", "every"),
    [(8, None, 2), (1, None, 1), (3, None, 1), (400, None, 100), (None, None, 50), (8, 5, 5), (None, 7, 7)],
)
def test_checkpoint_interval_is_tied_to_max_steps(max_steps, save_steps, every):
    settings = TrainSettings(max_steps=max_steps, save_steps=save_steps)
    assert settings.checkpoint_every() == every
    args = trainer_args(settings, plan_device(settings, device="cpu"), Path("out"), quiet=True)
    assert args["save_steps"] == every and args["save_total_limit"] == 2


def test_training_threads_are_recorded_once_and_reused(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    said: list[str] = []
    assert run_threads(store, count=lambda: 2) == 2  # the first step records this process's count
    assert store.meta()["train_threads"] == 2
    # a resume on a process pinned to one core (or given more) trains with the recorded count
    assert run_threads(store, count=lambda: 1, log=said.append) == 2
    assert run_threads(store, count=lambda: 16) == 2
    assert said and "2 CPU threads" in said[0] and "has 1" in said[0]
    plan = plan_device(TrainSettings(), device="cpu", threads=run_threads(store, count=lambda: 1))
    assert plan.threads == 2
    store.close()
    assert run_threads(None, count=lambda: 3) == 3  # a step without a run store: this process's count


class _Args:
    max_length = 64
    train_batch_size = 2
    gradient_accumulation_steps = 2


class _FakeTrainer:
    def __init__(self, data, collator=None):
        self.train_dataset = data
        self.args = _Args()
        self.data_collator = collator
        self.callbacks = []

    def add_callback(self, cb):
        self.callbacks.append(cb)


def test_dpo_pairs_are_grouped_by_length_in_a_resumable_order():
    from failforge.train.batching import group_dpo_by_length

    sizes = [3, 40, 5, 38, 7, 36, 9, 34, 11, 32, 13, 30, 15, 28, 17, 26] * 4
    data = {"prompt_ids": [[1] * 2] * len(sizes), "chosen_ids": [[1] * n for n in sizes], "rejected_ids": [[1]] * len(sizes)}
    trainer = _FakeTrainer(data)
    group_dpo_by_length(trainer, seed=5)
    sampler = trainer._get_train_sampler()
    first = list(sampler)
    assert sorted(first) == list(range(len(sizes)))
    assert list(trainer._get_train_sampler()) == first  # a resumed run rebuilds the same order
    sampler.set_epoch(1)
    assert list(sampler) != first  # each epoch its own order
    # the step's rows (4 = batch 2 x accumulation 2) are close in length: less padding than a random order
    spread = lambda order: sum(max(sizes[i] for i in order[k:k + 4]) - min(sizes[i] for i in order[k:k + 4]) for k in range(0, len(order), 4))
    import random

    shuffled = random.Random(0).sample(range(len(sizes)), len(sizes))
    assert spread(first) < spread(shuffled) / 2


def test_token_count_records_slots_and_real_tokens_per_step():
    import torch

    from failforge.train.batching import TokenCount

    def batch(rows):
        n = max(len(e) for e in rows)
        return {
            "input_ids": torch.zeros(len(rows), n, dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(e) + [0] * (n - len(e)) for e in rows]),
        }

    trainer = _FakeTrainer(None)
    seen = []
    trainer.training_step = lambda model, inputs, n=None: seen.append(inputs) or 0.5
    counter = TokenCount().install(trainer)
    assert trainer.callbacks == [counter]
    assert trainer.training_step("m", batch([[1, 2, 3], [1]]), 4) == 0.5 and len(seen) == 1
    trainer.training_step("m", batch([[1, 2], [1, 2]]))  # gradient accumulation: two batches, one step
    logs = {"loss": 1.0}
    counter.on_log(None, None, None, logs=logs)
    assert (logs["tokens"], logs["real_tokens"]) == (10, 8)
    logs = {"loss": 1.0}
    counter.on_log(None, None, None, logs=logs)  # no batch since: nothing added
    assert "tokens" not in logs
    counter.training_step = None
    counter.count({"input_ids": torch.zeros(1, 7)})  # padding-free: no attention mask, every slot is real
    logs = {"loss": 1.0}
    counter.on_log(None, None, None, logs=logs)
    assert logs["tokens"] == logs["real_tokens"] == 7
