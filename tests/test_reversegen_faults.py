"""ReverseGen with an openai-backend target (a real llama.cpp server) behind the
fault-injecting proxy: 20% of requests fail and the run gives the clean run's
outputs; a refused request makes one item unscorable; a token budget stops the run
cleanly and a resume with a larger one finishes it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from runcli import cli

from failforge.run.store import RunStore

pytest_plugins = ["fixtures_servers"]
pytestmark = pytest.mark.slow

KINDS = ["500", "429", "timeout", "drop", "truncate"]
TIMEOUT_S = 15.0  # a 48-token answer takes about a second here; an injected timeout waits this long


def config(tmp_path, name: str, base_url: str, **extra) -> str:
    cfg = {
        "method": "reversegen",
        "task": "math",
        "proposer": {"n_threads": 2, "batch_size": 6},  # proposing and answering take turns: both cores
        "target": {"backend": "openai", "base_url": base_url, "model": "smollm2", "max_concurrency": 1,
                   "timeout_s": TIMEOUT_S, "max_retries": 8},
        "seeds": {"dataset": "arithmetic", "heldout": 0},
        "iterations": 3,
        "prompts_per_iteration": 8,
        "samples_per_prompt": 4,
        "proposer_max_tokens": 40,
        "target_max_tokens": 48,
        "embedding_metrics": False,
        "train": {"warmup": None, "proposer": None, "target": None},
        **extra,
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def clean_run(llama_server, tmp_path_factory):
    """The run with no faults and no budget, made once for both tests: the outputs the others must give."""
    tmp = tmp_path_factory.mktemp("clean")
    run_dir = tmp / "clean"
    proc = cli("run", config(tmp, "clean", llama_server.base_url), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def attempts(run_dir) -> dict[str, tuple]:
    store = RunStore(run_dir / "store.sqlite", readonly=True)
    try:
        return {a["instruction"]: (tuple(a["responses"]), a["label"], a.get("error")) for a in store.records("attempt")}
    finally:
        store.close()


def schedule(blocks: int, seed: int = 13) -> list[str]:
    """One fault in every five requests (20%), at a random place in the block; the
    kinds taken in turn from a shuffled list, so every kind comes early."""
    rng = random.Random(seed)
    kinds = KINDS[:]
    rng.shuffle(kinds)
    out = []
    for b in range(blocks):
        block = ["ok"] * 5
        block[rng.randrange(5)] = kinds[b % len(kinds)]
        out += block
    return out


def test_faulty_server_gives_the_clean_outputs_and_one_refusal_is_one_unscorable_item(clean_run, fault_proxy, tmp_path):
    clean = attempts(clean_run)
    assert len(clean) >= 4 and all(err is None for _, _, err in clean.values())

    plan = schedule(80)
    plan[plan.index("ok", 7)] = "400"  # one request refused, as a prompt past the context window would be
    fault_proxy.reset(plan)
    fault_proxy.retry_after = "1"
    fault_proxy.delay_s = TIMEOUT_S + 2
    faulty_dir = tmp_path / "faulty"
    proc = cli("run", config(tmp_path, "faulty", fault_proxy.base_url), "--run-dir", str(faulty_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    faulty = attempts(faulty_dir)

    refused = {k: v for k, v in faulty.items() if v[2] is not None}
    assert len(refused) == 1
    (text, (responses, label, error)), = refused.items()
    assert label == "unscorable" and error == "HTTP 400: injected 400" and responses == ("",)
    assert {k: v for k, v in faulty.items() if k != text} == {k: v for k, v in clean.items() if k != text}
    assert text in clean  # the same instruction, answered in the clean run

    injected = [f for f in fault_proxy.faults if f != "400"]
    posted = len(fault_proxy.faults) + len(fault_proxy.forwarded_bodies) - fault_proxy.faults.count("truncate")
    assert set(injected) == set(KINDS) and 0.15 <= len(injected) / posted <= 0.25  # every kind, about 20%
    store = RunStore(faulty_dir / "store.sqlite", readonly=True)
    events = store.meta()["backend_events"]["target"]
    store.close()
    faults = {k.removeprefix("fault: "): n for k, n in events.items() if k.startswith("fault: ")}
    # a loaded machine can add timeouts of its own (the server answered too late): counted, never fewer
    natural = faults["timeout"] - injected.count("timeout")
    assert natural >= 0
    assert sum(faults.values()) == len(injected) + natural == events["retries"]
    assert faults["HTTP 500"] == injected.count("500") and faults["HTTP 429"] == injected.count("429")
    assert faults["connection cut"] == injected.count("drop") + injected.count("truncate")
    assert events["refused: HTTP 400"] == 1 and events["requests"] == posted

    html = tmp_path / "report.html"
    rep = cli("report", str(faulty_dir), "-o", str(html))
    assert rep.returncode == 0, rep.stderr[-2000:]
    page = html.read_text()
    assert "Model servers" in page and f"HTTP 500: {faults['HTTP 500']}" in page
    assert "Items the model server refused (1, unscorable)" in page and "HTTP 400: injected 400" in page
    print(f"requests {events['requests']}, faults injected {len(injected)} {sorted(faults.items())}, refused 1")


def test_token_budget_stops_cleanly_and_a_larger_one_finishes_the_run(clean_run, llama_server, tmp_path):
    whole_dir = clean_run
    store = RunStore(whole_dir / "store.sqlite", readonly=True)
    total = store.tokens_spent()
    store.close()

    cut_dir = tmp_path / "cut"
    budget = total * 2 // 3
    proc = cli("run", config(tmp_path, "cut", llama_server.base_url, token_budget=budget), "--run-dir", str(cut_dir))
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stopped: token budget of {budget:,} reached")
    assert f"failforge resume {cut_dir} --token-budget N" in lines[0] and "Traceback" not in proc.stderr
    store = RunStore(cut_dir / "store.sqlite", readonly=True)
    spent, status = store.tokens_spent(), store.meta()["status"]
    store.close()
    assert status == "stopped" and budget <= spent < total
    runs = cli("runs", str(tmp_path), "--json")
    listed = {Path(r["run_dir"]).name: r for r in json.loads(runs.stdout)}
    assert listed["cut"]["status"] == "stopped" and listed["cut"]["resumable"]

    again = cli("resume", str(cut_dir))  # the same budget: stops again, sends nothing
    assert again.returncode == 3
    proc = cli("resume", str(cut_dir), "--token-budget", str(total * 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts(cut_dir) == attempts(whole_dir)
    store = RunStore(cut_dir / "store.sqlite", readonly=True)
    assert store.tokens_spent() == total and store.meta()["status"] == "finished"
    store.close()
