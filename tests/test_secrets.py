"""An API key set in the environment reaches the server and no file failforge writes.

A real llama.cpp server that refuses requests without the key answers a small job run
through the real CLI; then `report` and `export` run, and every byte written under the
test's folder (run directory with its store and log, cache, home, report, exports) and
every line printed is searched for the key.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import httpx
import pytest
import yaml

from runcli import cli
from servers import LlamaServer

from failforge.run.store import RunStore



def job(base_url: str) -> dict:
    """ReverseGen on arithmetic, one small iteration, both models behind the server:
    it writes attempts, failures, a report with examples and export rows."""
    model = {"backend": "openai", "base_url": base_url, "model": "smollm2", "api_key_env": "FAILFORGE_TEST_API_KEY",
             "max_concurrency": 1, "max_retries": 1}
    return {
        "method": "reversegen", "task": "math", "task_options": {"reference": "exact"}, "judge": {"kind": "math"},
        "proposer": model, "target": model,
        "seeds": {"dataset": "arithmetic", "heldout": 0},
        "iterations": 1, "prompts_per_iteration": 4, "samples_per_prompt": 2,
        "proposer_max_tokens": 32, "target_max_tokens": 16,
        "embedding_metrics": False,
        "train": {"warmup": None, "proposer": None, "target": None},
    }  # fmt: skip


def _files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return sorted(found)


def _a_failed_instruction(run_dir: Path) -> str:
    store = RunStore(run_dir / "store.sqlite", readonly=True)
    try:
        failed = [a["instruction"] for a in store.records("attempt") if a["label"] == "fail"]
    finally:
        store.close()
    assert failed, "the job made no failure to report and export"
    return failed[0]


def _plain_piece(text: str) -> str:
    """The longest run of letters, digits and spaces: the same bytes in SQLite, JSON and HTML."""
    return max(re.findall(r"[A-Za-z0-9 ]+", text), key=len).strip()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    from failforge.models.registry import resolve_weights

    key = "sk-ff-" + secrets.token_hex(24)
    log = tmp_path_factory.mktemp("keyed-server") / "server.log"
    with LlamaServer(str(resolve_weights("smollm2-135m-instruct")), n_threads=1, log_path=log, api_key=key) as server:
        yield server, key


def test_api_key_reaches_the_server_and_no_file_written(keyed_server, tmp_path, monkeypatch):
    server, key = keyed_server
    # the server really refuses a request without the key: a run that finishes sent it
    assert httpx.get(server.base_url + "/models", timeout=10).status_code == 401

    work = tmp_path / "work"  # everything the commands may write lands here
    work.mkdir()
    monkeypatch.setenv("FAILFORGE_TEST_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("HOME", str(work / "home"))
    monkeypatch.setenv("FAILFORGE_CACHE", str(work / "cache"))
    cfg = work / "job.yaml"
    cfg.write_text(yaml.safe_dump(job(server.base_url)))
    run_dir = work / "run"
    printed = []
    for args in (
        ("run", str(cfg), "--run-dir", str(run_dir)),
        ("report", str(run_dir), "-o", str(work / "report.html")),
        ("export", str(run_dir), "-o", str(work / "exports")),
        ("export", str(run_dir), "-o", str(work / "exports-hf"), "-f", "hf"),
        ("runs", str(work)),
    ):
        proc = cli(*args, timeout=600)
        assert proc.returncode == 0, (args[0], proc.stderr[-2000:])
        printed.append(proc.stdout + proc.stderr)

    written = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert {"run/store.sqlite", "run/run.log", "run/config.yaml", "report.html"} <= set(written)
    assert any(w.startswith("exports/") for w in written) and any(w.startswith("exports-hf/") for w in written)
    # the search reads what files hold: a failed instruction is in the store, the report and the exports
    holding = _files_holding(work, _plain_piece(_a_failed_instruction(run_dir)).encode())
    assert {"report.html", "exports/failures.jsonl"} <= set(holding), holding
    assert "run/store.sqlite" in holding or "run/store.sqlite-wal" in holding, holding
    assert "FAILFORGE_TEST_API_KEY" in (run_dir / "config.yaml").read_text()  # the name is kept, the value is not

    # the key, whole or a 16-character piece of it (a masked key keeps a prefix), is nowhere
    for needle in (key, key[:16], key[-16:]):
        assert _files_holding(work, needle.encode()) == [], needle
        assert not any(needle in out for out in printed)


def test_a_key_written_where_its_variable_name_goes_is_refused_without_echo(tmp_path):
    key = "sk-ff-" + secrets.token_hex(24)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: answer\nmodel: {{backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: '{key}'}}\n")
    proc = cli("run", str(cfg), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "api_key_env" in lines[0], proc.stderr
    assert key[6:22] not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()
