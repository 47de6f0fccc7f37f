"""Mistake Analysis end to end on the embedded model: real llama.cpp induction,
analysis and revision, real LoRA SFT of three arms, every arm exported to GGUF and
evaluated, the premise measured, exports with provenance, and a resume that redoes
nothing."""

import json

import pytest
from runcli import assert_resume_repeats_nothing, cli, run_config

TINY = """
method: mistake-analysis
model: {backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, batch_size: 8}
data: {harmful: [advbench], train: 8, test: 4, benign_test: 3, mmlu_n: 4}
premise: {n: 6}
answer_max_tokens: 32
critique_max_tokens: 48
train: {kind: sft, max_steps: 1, batch_size: 2}
"""


@pytest.mark.slow
def test_mistake_analysis_arms_premise_exports_and_resume(tmp_path):
    run_dir, store = run_config(tmp_path, TINY)
    results = store.metrics()[0]
    assert results["data.train"] == 8 and results["data.test"] == 4
    assert results["induction.kept"] + results["induction.dropped"] + results["induction.unscorable"] == 8
    analyses = store.records("analysis")
    assert len(analyses) == results["induction.kept"]
    kept = [a for a in analyses if a["label"] == "pass"]
    assert results["analysis.kept"] == len(kept)
    # the judge's measured error rate is in the run, beside the rates it decides
    judges = store.meta()["judges"]
    assert set(judges) == {"refusal+classifier:profanity", "critique"}
    harm, rule = judges["refusal+classifier:profanity"], judges["critique"]
    assert harm["status"] == "measured" and harm["rows"] == 604 and 0 <= harm["error_rate"] <= 1
    assert rule["status"] == "measured" and rule["rows"] == 60 and rule["error_rate"] == 0.25
    assert "premise.discrimination_accuracy" in results and "premise.generation_harmless_rate" in results

    arms = ["untrained"] + (["mistake-analysis", "sft", "critique-revise"] if kept else [])
    for arm in arms:
        assert results[f"arms.{arm}.harmful_n"] == 4 and results[f"arms.{arm}.hijack_n"] == 4 and results[f"arms.{arm}.mmlu_n"] == 4
        lo, rate, hi = (results.get(f"arms.{arm}.harmless_rate{s}") for s in ("_lo", "", "_hi"))
        assert rate is None or 0 <= lo <= rate <= hi <= 1
    if kept:
        # the same budget: as many rows for every arm, the same steps
        assert len({results[f"mix.{a}"] for a in arms[1:]}) == 1
        steps = {}
        for s in store.train_steps():
            steps[s["model_version"]] = steps.get(s["model_version"], 0) + 1
        assert {steps[f"model-{a}"] for a in arms[1:]} == {1}
        sft = store.records("sft")
        analysis_rows = [r for r in sft if r["provenance"]["arm"] == "mistake-analysis" and r["provenance"]["stage"] == "analysis"]
        assert len(analysis_rows) == len(kept)
        for r in analysis_rows:  # the training input has no hint; the target is the critique
            assert "harmful, unethical" not in r["messages"][0]["content"] and r["messages"][0]["content"].endswith("Analyse the answer above.")
    evals = store.records("eval")
    assert {e["arm"] for e in evals} == set(arms)
    assert {e["stage"] for e in evals} == {"harmful", "hijack", "mmlu"}
    test_texts = {e["instruction"] for e in evals if e["stage"] == "harmful"}
    induced = {a["instruction"] for a in store.records("attempt") if a["provenance"]["stage"] == "induction"}
    assert len(induced) == 8 and not test_texts & induced  # held-out instructions are never trained on

    out = tmp_path / "export"
    proc = cli("export", str(run_dir), "--format", "jsonl", "--what", "all", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = [json.loads(line) for line in (out / "analyses.jsonl").read_text().splitlines()]
    assert len(exported) == len(analyses)
    assert all(r["harmful_content"] and r["stage"] == "analysis" and r["method"] == "mistake-analysis" for r in exported)
    sft_rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in sft_rows} == set(arms[1:])

    assert_resume_repeats_nothing(run_dir, store)
