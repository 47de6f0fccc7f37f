"""Adversarial judge fine-tuning end to end on the embedded models: a real llama.cpp
adversary, the oracle labeller, real classifier fine-tuning of all-MiniLM-L6-v2 round
after round beside the random-sample control, then a resume that redoes nothing."""

import pytest
from runcli import assert_resume_repeats_nothing, run_config

TINY = """
method: adversarial-judge
adversary: {n_threads: 2, batch_size: 8}
pools: {seed_set: 24, heldout: 24}
rounds: 2
problematic_prompts: 6
benign_prompts: 2
samples_per_prompt: 2
embedding_metrics: false
train: {kind: classifier, lora: null, epochs: 1, learning_rate: 5.0e-5, batch_size: 8, max_length: 64}
transfer: {n: 20}
"""


@pytest.mark.slow
def test_adversarial_judge_rounds_with_control_and_resume(tmp_path):
    run_dir, store = run_config(tmp_path, TINY)
    metrics = store.metrics()
    for r in (1, 2):
        m = metrics[r]
        assert m["adversary.samples"] == 16
        assert m["adversary.kept"] + m["adversary.invalid"] + m["adversary.copied"] + m["adversary.heldout_copies"] + m["adversary.near_duplicates"] == 16
        assert m["labelled"] == m["adversary.kept"]  # the oracle labels every kept rewrite
        for arm in ("adversarial", "random control", "untuned"):
            assert m[f"{arm}.n"] == 24
            assert 0 <= m[f"{arm}.accuracy_lo"] <= m[f"{arm}.accuracy"] <= m[f"{arm}.accuracy_hi"] <= 1
    steps = {s["model_version"] for s in store.train_steps()}
    assert {"judge-r0", "judge-r1", "judge-r2", "control-r1", "control-r2"} <= steps
    prompts = store.records("prompt")
    rewrites = [p for p in prompts if p["source"] == "adversary"]
    assert rewrites and all(p["label"] in ("problematic", "benign") and p["origin"] for p in rewrites)
    heldout = {p["text"] for p in prompts if p["source"] == "heldout"}
    assert len(heldout) == 24 and not heldout & {p["text"] for p in rewrites}
    # the control gets as many randomly sampled labelled prompts as the adversarial arm added
    for r in (1, 2):
        assert len([p for p in prompts if p["source"] == "pool" and p["round"] == r]) == metrics[r]["added_to_training"]
    assert "transfer.adversarial.accuracy" in metrics[0] and "transfer.untuned.accuracy" in metrics[0]
    assert_resume_repeats_nothing(run_dir, store)
