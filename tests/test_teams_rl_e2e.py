"""TeaMs-RL end to end on the embedded model, through the CLI: a real llama.cpp
instructor, reviewer and expert, TRPO iterations with checkpoints, generation by the
trained policy, the random policy and Evol-Instruct at the same expert budget, SFT
rows with calls by role, exports, LoRA SFT of the target per arm with an MMLU check,
and a resume that makes no model call again."""

import json

import pytest
from runcli import assert_resume_repeats_nothing, cli, run_config

TINY = """
method: teams-rl
instructor: {n_threads: 2, batch_size: 8}
reviewer: {n_threads: 2, batch_size: 8}
expert: {n_threads: 2, batch_size: 8}
target: {n_threads: 2, batch_size: 8}
seeds: {train: 4, generate: 2}
episode_steps: 3
policy: {iterations: 2, n_steps: 6}
generate: {expert_queries: 4}
reviewer_check: {n: 4}
evaluation: {mmlu_n: 4}
instructor_max_tokens: 32
expert_max_tokens: 24
train: {kind: sft, max_steps: 1, batch_size: 2}
"""
ARMS = ("teams-rl", "random-policy", "evol-instruct")


@pytest.mark.slow
def test_teams_rl_policy_arms_calls_exports_and_resume(tmp_path):
    run_dir, store = run_config(tmp_path, TINY)
    metrics = store.metrics()
    results = metrics[0]
    # the learning curve: one point per TRPO iteration, each a rollout of 6 rewrites
    for k in (1, 2):
        m = metrics[k]
        assert m["steps"] == 6 and m["not_equal"] + m["equal"] + m["eliminated"] + m["unscorable"] == 6
        assert m["instructor_calls"] == 6 and m["reviewer_calls"] == 6 - m["eliminated"]
        assert 0 <= m["reward_per_step"] <= 1 and m["random_policy_reward_per_step"] == results["arms.random-policy.reward_per_step"]
    state = json.loads((run_dir / "policy" / "state.json").read_text())
    assert state["iteration"] == 2 and (run_dir / "policy" / state["checkpoint"]).is_file()
    rewrites = store.records("rewrite")
    assert len([r for r in rewrites if r["provenance"]["stage"] == "train"]) == 12
    for arm in ARMS:
        g = lambda k: results[f"arms.{arm}.{k}"]  # noqa: B023, E731
        assert g("steps") == 6 and g("generation_instructor_calls") == 6  # the same seeds and steps for every arm
        assert g("expert_queries") <= 4 and g("expert_calls") == g("expert_queries")  # the same expert budget
        assert g("dataset_size") == g("expert_queries") - g("answers_eliminated")
    training = sum(metrics[k]["instructor_calls"] for k in (1, 2))
    assert results["arms.teams-rl.instructor_calls"] == training + 6 and results["arms.random-policy.instructor_calls"] == 6
    # the reviewer, checked on the training steps it scored
    scored = [r for r in rewrites if r["provenance"]["stage"] == "train" and r["outcome"] in ("not-equal", "equal")]
    assert results["reviewer_check.n"] == min(4, len(scored))
    if scored:
        assert 0 <= results["reviewer_check.novelty_agreement"] <= 1
    # SFT rows carry their arm and the calls they cost by role
    sft = store.records("sft")
    assert {r["provenance"]["arm"] for r in sft} <= set(ARMS)
    for r in sft:
        p = r["provenance"]
        assert p["method"] == "teams-rl" and p["stage"] == "expert" and p["calls_by_role"]["expert"] == 1
        assert p["calls"] == sum(p["calls_by_role"].values())
    # every trained arm and the untrained target answered the same MMLU questions
    trained = {r["provenance"]["arm"] for r in sft}
    evals = store.records("eval")
    assert {e["arm"] for e in evals} == ({"untrained"} | trained if trained else set())
    for arm in {e["arm"] for e in evals}:
        assert results[f"arms.{arm}.mmlu_n"] == 4

    out = tmp_path / "sft.jsonl"  # one kind: written to the file itself
    proc = cli("export", str(run_dir), "--format", "jsonl", "--what", "sft", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(sft)
    for row in rows:
        assert json.loads(row["calls_by_role"])["expert"] == 1 and row["arm"] in ARMS

    assert_resume_repeats_nothing(run_dir, store)
