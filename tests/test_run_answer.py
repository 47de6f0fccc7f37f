"""The answer job through the real path: CLI -> run directory -> llama.cpp -> store."""

import subprocess
import sys
from pathlib import Path

import pytest

from failforge.config import load_run_config
from failforge.run.store import RunStore

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_run_config(path)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args],
        capture_output=True, text=True, timeout=600,
    )


def test_answer_job_runs_then_resume_sends_nothing(tmp_path):
    cfg = tmp_path / "answer.yaml"
    cfg.write_text("method: answer\nlimit: 3\nmodel: {batch_size: 3}\nsampling: {max_tokens: 12}\n")
    run_dir = tmp_path / "run"
    first = cli("run", str(cfg), "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "sent_this_process: 3" in first.stdout
    store = RunStore(run_dir / "store.sqlite")
    answers = store.records("answer")
    assert [a["prompt"] for a in answers][:1] == ["What is the capital of France?"]
    assert all(a["responses"][0].strip() for a in answers)
    assert store.meta()["status"] == "finished"
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.log").exists()
    store.close()

    again = cli("resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sent_this_process: 0" in again.stdout  # every answer came from the store
    store = RunStore(run_dir / "store.sqlite")
    assert [a["responses"] for a in store.records("answer")] == [a["responses"] for a in answers]
    assert store.meta()["resumes"] == 1
