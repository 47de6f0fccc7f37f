"""Running the real `failforge` command in a subprocess, and checking a resume."""

import sqlite3
import subprocess
import sys

from failforge.run.store import RunStore


def cli(*args, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def stored_calls(path) -> int:
    """Answers committed to a run store so far, read from outside the run while it runs
    (0 before the store or its calls table exists)."""
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # the table is not there yet
        return 0


def run_config(tmp_path, text: str) -> tuple:
    """Write ``text`` as a config, run it, and open the store it wrote."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    run_dir = tmp_path / "run"
    proc = cli("run", str(cfg), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, RunStore(run_dir / "store.sqlite")


def assert_resume_repeats_nothing(run_dir, store: RunStore) -> RunStore:
    """Resume a finished run: no model call is made again and every metric is the same."""
    calls, metrics = store.call_totals()["calls"], store.metrics()
    store.close()
    again = cli("resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    store = RunStore(run_dir / "store.sqlite")
    assert store.call_totals()["calls"] == calls  # every answer came from the cache
    assert store.metrics() == metrics  # the same numbers
    assert store.meta()["status"] == "finished"
    return store
