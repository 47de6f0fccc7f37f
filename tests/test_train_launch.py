"""Training steps as processes of their own under ``accelerate launch`` (train/launch.py).

The unit tests check the settings, the command line and the import of rank 0's files
into a real run store. The slow tests run a real 2-process DDP step over gloo on
this CPU machine with SmolLM2-135M: SFT beside the same step in one process, and DPO.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from pydantic import ValidationError
from train_rows import DPO_ROWS, SFT_ROWS

from failforge.errors import ConfigError
from failforge.run.store import RunStore
from failforge.train import TrainSettings
from failforge.train.checkpointing import weight_settings
from failforge.train.launch import ERROR_PREFIX, LAUNCH_LOG, import_step, launch_command
from failforge.train.worker import main as worker_main


# --- settings -------------------------------------------------------------------------
def test_batch_must_split_evenly_among_processes():
    with pytest.raises(ValidationError, match="batch_size 3 must be a multiple of processes 2"):
        TrainSettings(batch_size=3, processes=2)
    assert TrainSettings(batch_size=4, processes=2).per_process_batch() == 2


def test_inprocess_launcher_refuses_several_processes():
    with pytest.raises(ValidationError, match="launcher inprocess"):
        TrainSettings(batch_size=4, processes=2, launcher="inprocess")


@pytest.mark.parametrize(
    ("kw", "launched"),
    [({}, False), ({"processes": 2}, True), ({"launcher": "accelerate"}, True), ({"accelerate_config": "x.yaml"}, True)],
)
def test_when_a_step_is_launched(kw, launched):
    assert TrainSettings(**kw).launched() is launched


def test_one_process_keeps_the_fingerprints_of_before():
    assert "processes" not in weight_settings(TrainSettings())
    assert weight_settings(TrainSettings(processes=2))["processes"] == 2
    # how a step is launched does not change its weights
    assert weight_settings(TrainSettings(launcher="accelerate")) == weight_settings(TrainSettings())


# --- the command line -----------------------------------------------------------------
def test_cpu_command_names_every_value(tmp_path):
    cmd = launch_command(TrainSettings(processes=2), tmp_path, cuda=False, port=29999, threads=1)
    assert cmd[cmd.index("--num_cpu_threads_per_process") + 1] == "1"
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert "--cpu" in cmd and "--multi_gpu" not in cmd
    assert cmd[cmd.index("--main_process_port") + 1] == "29999"
    assert cmd[-3:] == ["-m", "failforge.train.worker", str(tmp_path)]


def test_gpu_command_and_config_file(tmp_path):
    gpu = launch_command(TrainSettings(processes=4), tmp_path, cuda=True, port=1)
    assert "--multi_gpu" in gpu and "--cpu" not in gpu
    cfg = launch_command(TrainSettings(batch_size=8, processes=8, accelerate_config="zero3.yaml"), tmp_path, cuda=True, port=1)
    assert cfg[cfg.index("--config_file") + 1] == "zero3.yaml"
    assert "--multi_gpu" not in cfg and "--mixed_precision" not in cfg  # the config file decides


# --- rank 0's files into the run store ------------------------------------------------------
def test_import_step_puts_rank_zero_files_in_the_store(tmp_path):
    (tmp_path / "train_log.jsonl").write_text(
        json.dumps({"step": 1, "loss": 2.5, "seconds": 1.2, "tokens": 40, "real_tokens": 38}) + "\n"
        + json.dumps({"step": 2, "loss": 2.1, "seconds": 1.1, "tokens": 44, "real_tokens": 44}) + "\n"
    )
    (tmp_path / "plan.json").write_text(json.dumps({"device": "cpu", "precision": "fp32", "threads": 1}))
    store = RunStore(tmp_path / "store.sqlite")
    import_step(tmp_path, "sft-x", store)
    import_step(tmp_path, "sft-x", store)  # a resume imports again: the same rows, not twice
    steps = store.train_steps("sft-x")
    assert [(s["step"], s["loss"]) for s in steps] == [(1, 2.5), (2, 2.1)]
    assert {r["_key"]: r["threads"] for r in store.records("train_plan")} == {"sft-x": 1}
    store.close()


def test_worker_without_a_job_says_so_in_one_line(tmp_path, capsys):
    assert worker_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIX) and "no readable training job" in err[0]


# --- real processes ---------------------------------------------------------------------


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"max_steps": 2, "batch_size": 2, "lora": {"r": 8}, "precision": "fp32", "export_gguf": False,
                            "seed": 3, **kw})


@pytest.fixture(scope="module")
def base():
    from failforge.models.registry import resolve_weights
    from failforge.train import version_from_gguf

    return version_from_gguf(resolve_weights("smollm2-135m-instruct"), "smollm2")


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(base, tmp_path):
    from failforge.train import train_sft
    from failforge.train.launch import train_launched

    store = RunStore(tmp_path / "store.sqlite")
    two = train_launched("sft", base, SFT_ROWS, _settings(processes=2), tmp_path / "two", name="sft-two", store=store, threads=1)
    one = train_sft(base, SFT_ROWS, _settings(), tmp_path / "one", store=store, name="sft-one", quiet=True, threads=2)

    log = (tmp_path / "two" / LAUNCH_LOG).read_text()
    assert "training on cpu" in log  # rank 0's plan line
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").exists()
    assert two.parent == base.fingerprint and two.fingerprint != one.fingerprint  # processes=2 is part of the weights
    # rank 0 alone wrote the step log: one row per optimizer step, imported into the store
    rows = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    a = [s["loss"] for s in store.train_steps("sft-one")]
    b = [s["loss"] for s in store.train_steps("sft-two")]
    assert len(a) == len(b) == 2 and all(math.isfinite(x) for x in a + b)
    # the same global batch of 2: one process takes both rows, two processes one each and average
    # their gradients; step 1 sees the same weights, so its losses differ by the averaging of the
    # two halves' token means only (rows of similar length here)
    assert abs(a[0] - b[0]) / a[0] < 0.05
    assert {r["_key"]: r["threads"] for r in store.records("train_plan")}["sft-two"] == 1

    # a finished step is not trained again: no new launch
    before = log
    again = train_launched("sft", base, SFT_ROWS, _settings(processes=2), tmp_path / "two", name="sft-two", store=store, threads=1)
    assert again == two and (tmp_path / "two" / LAUNCH_LOG).read_text() == before
    store.close()


@pytest.mark.slow
def test_two_process_dpo_with_a_precomputed_reference(base, tmp_path):
    from failforge.train.launch import train_launched

    store = RunStore(tmp_path / "store.sqlite")
    settings = _settings(kind="dpo", processes=2, learning_rate=5e-5, precompute_ref=True, export_gguf=True)
    version = train_launched("dpo", base, DPO_ROWS, settings, tmp_path / "dpo", name="dpo-two", store=store, ref=base, threads=1)
    losses = [s["loss"] for s in store.train_steps("dpo-two")]
    assert len(losses) == 2 and abs(losses[0] - math.log(2)) < 1e-3  # the policy starts as its reference
    assert version.gguf and (tmp_path / "dpo" / "model.gguf").exists()  # rank 0 exported the merged weights
    store.close()


def test_a_step_folder_holding_another_step_is_refused_before_launch(base, tmp_path):
    from failforge.train.launch import train_launched

    (tmp_path / "step").mkdir()
    (tmp_path / "step" / "inputs.json").write_text(json.dumps({"kind": "sft", "parent": "other"}))
    with pytest.raises(ConfigError, match="holds a training step with other inputs"):
        train_launched("sft", base, SFT_ROWS, _settings(processes=2), tmp_path / "step", name="x", threads=1)
    assert not (tmp_path / "step" / LAUNCH_LOG).exists()


def test_a_worker_stops_when_its_driver_is_gone():
    """A killed run leaves no process training in its step folder."""
    import subprocess
    import time

    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker = subprocess.Popen([sys.executable, "-c", (
        "import time; from failforge.train.worker import _stop_with_driver; "
        f"_stop_with_driver({driver.pid}, every=0.1); time.sleep(60)"
    )])
    try:
        time.sleep(1.5)
        assert worker.poll() is None  # the driver is alive: the worker goes on
        driver.kill()
        driver.wait()
        assert worker.wait(timeout=10) == 1
    finally:
        for p in (driver, worker):
            if p.poll() is None:
                p.kill()
