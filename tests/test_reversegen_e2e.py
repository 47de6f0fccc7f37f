"""ReverseGen end to end on the embedded model: real llama.cpp generation, exact math
judging, real TRL SFT/DPO steps with GGUF export, then a resume that redoes nothing."""

import subprocess
import sys

import pytest

from failforge.run.store import RunStore

TINY = """
method: reversegen
task: math
proposer: {n_threads: 1, batch_size: 6}
target: {n_threads: 1, batch_size: 6}
seeds: {dataset: arithmetic, heldout: 3}
iterations: 2
prompts_per_iteration: 3
samples_per_prompt: 3
proposer_max_tokens: 40
target_max_tokens: 64
embedding_metrics: false
train:
  warmup: {kind: sft, max_steps: 1, max_length: 192}
  warmup_examples: 4
  proposer: {kind: dpo, max_steps: 1, max_length: 192}
  target: {kind: sft, max_steps: 1, max_length: 128}
"""


def cli(*args):
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args],
        capture_output=True, text=True, timeout=1200,
    )


@pytest.mark.slow
def test_reversegen_math_runs_trains_and_resumes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    proc = cli("run", str(cfg), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]

    store = RunStore(run_dir / "store.sqlite")
    metrics = store.metrics()
    for it in (1, 2):
        m = metrics[it]
        assert m["samples"] == 9
        assert m["instructions"] + m["invalid"] + m["copied_seeds"] <= 9
        assert 0.0 <= m["failure_rate_lo"] <= m["failure_rate"] <= m["failure_rate_hi"] <= 1.0
        assert m["target_calls"] == m["instructions"] and m["calls"] >= m["target_calls"]
    attempts = [a for a in store.records("attempt") if a["_key"].startswith("it1-")]
    assert attempts and all(a["label"] in ("fail", "pass") for a in attempts)  # exact checking always scores
    for a in attempts:
        assert a["reference"] is not None and a["provenance"]["proposer_fingerprint"]

    # the warm-up SFT ran and its weights were written back into a GGUF for llama.cpp
    assert (run_dir / "models" / "proposer-warmup" / "model.gguf").exists()
    fps = {s["model_version"] for s in store.train_steps()}
    assert "proposer-warmup" in fps
    labels = {a["label"] for a in attempts}
    if labels == {"fail", "pass"}:  # both outcomes: DPO pairs and a trained proposer
        assert store.records("pair", iteration=1)
        assert "proposer-it1" in fps
    else:
        assert "no failing/non-failing pair" in (run_dir / "run.log").read_text()
    if store.records("sft"):
        assert "target-sft" in fps
        assert "close_loop.reattack_failures_before" in metrics[0]
    calls_before = store.call_totals()["calls"]
    store.close()

    again = cli("resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    store = RunStore(run_dir / "store.sqlite")
    assert store.call_totals()["calls"] == calls_before  # every answer came from the cache
    assert store.metrics() == metrics  # the same numbers
    assert store.meta()["status"] == "finished"
