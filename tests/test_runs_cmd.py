"""`failforge runs` and summarize_run: statuses (killed = the run's process is gone),
headline numbers, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from failforge.errors import FailforgeError
from failforge.report.summary import list_runs, summarize_run
from failforge.run.store import RunStore
from test_report import build_run


def _set(run_dir: Path, **meta) -> None:
    s = RunStore(run_dir / "store.sqlite")
    s.set_meta(**meta)
    s.close()


def _killed_run(run_dir: Path) -> Path:
    """A run whose process was killed with SIGKILL while it was writing."""
    build_run(run_dir, status="running", iterations=2)
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from failforge.run.store import RunStore
        s = RunStore({str(run_dir / "store.sqlite")!r})
        s.set_meta(status="running", pid=os.getpid())
        s.put_metrics(3, {{"failure_rate": 0.75, "calls": 4}})
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    return run_dir


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    build_run(root / "a-finished", name="a-finished")
    build_run(root / "b-live", status="running", pid=os.getpid())  # this test process is alive
    _killed_run(root / "c-killed")
    build_run(root / "d-failed", status="failed", iterations=1)
    _set(root / "d-failed", error="RuntimeError: out of memory")
    build_run(root / "e-interrupted", status="interrupted", iterations=1)
    (root / "notes").mkdir()  # not a run: ignored
    (root / "README.txt").write_text("not a run")
    return root


def test_statuses_and_headline_numbers(folder):
    by_name = {Path(s.run_dir).name: s for s in list_runs(folder)}
    assert set(by_name) == {"a-finished", "b-live", "c-killed", "d-failed", "e-interrupted"}
    a, b, c, d, e = (by_name[n] for n in sorted(by_name))
    assert (a.status, a.resumable, b.status, b.resumable) == ("finished", False, "running", False)
    assert (c.status, c.resumable, c.status_label) == ("killed", True, "killed (resumable)")
    assert (d.status, d.resumable, d.error) == ("failed", True, "RuntimeError: out of memory")
    assert (e.status, e.resumable) == ("interrupted", True)
    assert (a.method, a.task, a.iterations, a.last_failure_rate) == ("reversegen", "safety", 3, 0.25)
    assert (a.calls, a.tokens, a.wall_seconds) == (48, a.prompt_tokens + a.completion_tokens, 3725.0)
    assert a.prompt_tokens == sum(20 + i for i in range(8)) * 2 * 3
    # the killed run's last write is its headline, and its wall time ends at its last write
    assert (c.iterations, c.last_failure_rate) == (3, 0.75)
    assert c.finished_at is None and c.wall_seconds is not None and c.wall_seconds > 0
    assert d.records == {"attempt": 8, "pair": 3, "sft": 4}


def test_a_run_without_config_is_not_resumable(folder, tmp_path):
    run = _killed_run(tmp_path / "no-config")
    (run / "config.yaml").unlink()
    s = summarize_run(run)
    assert (s.status, s.resumable) == ("killed", False)


def test_not_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(FailforgeError, match="not a run directory"):
        summarize_run(tmp_path)
    assert list(tmp_path.iterdir()) == []  # looking never creates a store
    with pytest.raises(FailforgeError, match="no such directory"):
        list_runs(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FailforgeError, match="cannot open the run store"):
        summarize_run(bad)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_runs_command_table_and_json(folder):
    r = _cli("runs", str(folder))
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert set(lines) >= {"a-finished", "b-live", "c-killed", "d-failed", "e-interrupted"}
    assert "finished" in lines["a-finished"] and "0.250" in lines["a-finished"] and "1h 02m 05s" in lines["a-finished"]
    assert "killed (resumable)" in lines["c-killed"] and "0.750" in lines["c-killed"]
    assert "failed (resumable)" in lines["d-failed"] and "running" in lines["b-live"]
    rows = json.loads(_cli("runs", str(folder), "--json").stdout)
    assert [Path(x["run_dir"]).name for x in rows][:1] and {x["status"] for x in rows} == {"finished", "running", "killed", "failed", "interrupted"}
    fin = next(x for x in rows if x["run_dir"].endswith("a-finished"))
    assert (fin["calls"], fin["iterations"], fin["last_failure_rate"]) == (48, 3, 0.25) and fin["tokens"] > 0


def test_runs_command_errors(tmp_path):
    r = _cli("runs", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: runs folder {tmp_path / 'nope'}: no such directory"
    r = _cli("runs", str(tmp_path))
    assert r.returncode == 0 and "no runs in" in r.stdout
