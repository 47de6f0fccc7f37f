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
from failforge.train.dpo import dpo_rows
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


def test_cpu_plan_turns_off_bf16_and_checkpointing():
    plan = plan_device(TrainSettings(), device="cpu")
    assert (plan.bf16, plan.fp16, plan.gradient_checkpointing) == (False, False, False)
    assert plan.trainer_kwargs()["use_cpu"] is True and plan.threads >= 1
    explicit = plan_device(TrainSettings(precision="bf16", gradient_checkpointing=True), device="cpu")
    assert explicit.bf16 and explicit.gradient_checkpointing
    with pytest.raises(ConfigError, match="train.precision: fp16 needs a CUDA GPU"):
        plan_device(TrainSettings(precision="fp16"), device="cpu")


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
