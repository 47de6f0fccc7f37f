"""ReverseGen end to end on the embedded model: real llama.cpp generation, exact math
judging, real TRL SFT/DPO steps with GGUF export, then a resume that redoes nothing;
the report, export and runs commands then read the store that real run wrote."""

import json

import pytest
from runcli import assert_resume_repeats_nothing, cli, run_config

TINY = """
method: reversegen
task: math
proposer: {n_threads: 2, batch_size: 6}
target: {n_threads: 2, batch_size: 6}
seeds: {dataset: arithmetic, heldout: 3}
iterations: 2
prompts_per_iteration: 4
samples_per_prompt: 4
proposer_max_tokens: 40
target_max_tokens: 64
embedding_metrics: false
train:
  warmup: {kind: sft, max_steps: 1, max_length: 192}
  warmup_examples: 4
  proposer: {kind: dpo, max_steps: 1, max_length: 192}
  target: {kind: sft, max_steps: 1, max_length: 128}
"""


@pytest.mark.slow
def test_reversegen_math_runs_trains_and_resumes(tmp_path):
    run_dir, store = run_config(tmp_path, TINY)
    metrics = store.metrics()
    for it in (1, 2):
        m = metrics[it]
        assert m["samples"] == 16
        assert m["instructions"] + m["invalid"] + m["copied_seeds"] + m["heldout_copies"] <= 16
        assert 0.0 <= m["failure_rate_lo"] <= m["failure_rate"] <= m["failure_rate_hi"] <= 1.0
        assert m["target_calls"] == m["instructions"] and m["calls"] >= m["target_calls"]
    attempts = [a for a in store.records("attempt") if a["_key"].startswith("it1-")]
    assert attempts and all(a["label"] in ("fail", "pass", "unscorable") for a in attempts)
    for a in attempts:
        assert a["reference"] is not None and a["provenance"]["proposer_fingerprint"]
    # seeds the target gets right about half the time: both outcomes, so DPO pairs and a DPO step
    assert {"fail", "pass"} <= {a["label"] for a in attempts}
    assert metrics[1]["dpo_pairs"] >= 1 and store.records("pair", iteration=1)

    # the warm-up SFT ran and its weights were written back into a GGUF for llama.cpp
    assert (run_dir / "models" / "proposer-warmup" / "model.gguf").exists()
    fps = {s["model_version"] for s in store.train_steps()}
    assert {"proposer-warmup", "proposer-it1", "target-sft"} <= fps
    # the judge was measured on its shipped human labels at run start
    judge = store.meta()["judges"]["math"]
    assert judge["status"] == "measured" and judge["rows"] >= 60 and judge["error_rate"] is not None
    # the loop was closed: held-out before (untrained, exported like the trained one), after, configured
    for key in ("before", "after", "configured"):
        assert f"close_loop.heldout_failure_rate_{key}" in metrics[0]
    assert "close_loop.reattack_failures_fixed" in metrics[0]
    assert (run_dir / "models" / "target-untrained" / "model.gguf").exists()
    evals = store.records("eval")
    assert {e["arm"] for e in evals} == {"base", "trained", "configured"}
    trained_fp = {e["provenance"]["target_fingerprint"] for e in evals if e["arm"] == "trained"}
    base_fp = {e["provenance"]["target_fingerprint"] for e in evals if e["arm"] == "base"}
    assert len(trained_fp) == 1 and trained_fp != base_fp  # rows name the model that answered
    store = assert_resume_repeats_nothing(run_dir, store)

    # report, export and runs on the store this real run wrote
    html = tmp_path / "report.html"
    rep = cli("report", str(run_dir), "-o", str(html))
    assert rep.returncode == 0, rep.stderr[-2000:]
    page = html.read_text()
    assert "math@2" in page and "human-labelled" in page and "failure rate" in page
    out = tmp_path / "export"
    exp = cli("export", str(run_dir), "--what", "all", "-o", str(out))
    assert exp.returncode == 0, exp.stderr[-2000:]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    heldout = {e["instruction"] for e in store.records("eval") if e["stage"] == "heldout"}
    assert failures and not any(f["instruction"] in heldout for f in failures)  # held-out seeds never leak
    exported = {f["id"] for f in failures}
    assert not any(e["_key"] in exported for e in store.records("eval"))  # evaluation answers are not failures
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert sft and not any(r["messages"][0]["content"] in heldout for r in sft)
    runs = cli("runs", str(tmp_path), "--json")
    assert runs.returncode == 0, runs.stderr[-2000:]
    assert "finished" in runs.stdout and "reversegen" in runs.stdout
