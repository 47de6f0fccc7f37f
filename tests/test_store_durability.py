"""Power-loss durability of the run store: each commit of model calls (the cache) is
flushed to disk (``synchronous=FULL``) before it returns; other commits are NORMAL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from failforge.models.base import Completion, Message, Request, SamplingParams
from failforge.run.store import RunStore

N = 20

WRITER = textwrap.dedent(
    """
    import sys
    from failforge.models.base import Completion, Message, Request, SamplingParams
    from failforge.run.store import RunStore
    store = RunStore(sys.argv[1])
    for i in range(int(sys.argv[3])):
        if sys.argv[2] == "calls":
            r = Request(messages=(Message(role="user", content=f"q{i}"),), params=SamplingParams())
            store.put_calls("fp", "m", [(r.key("fp"), r, Completion(text="a"))])
        else:
            store.put_metrics(i + 1, {"x": 1.0})
    store.close()
    """
)


def _request(i: int) -> Request:
    return Request(messages=(Message(role="user", content=f"q{i}"),), params=SamplingParams())


def test_calls_commit_with_full_and_the_rest_with_normal(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    try:
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        r = _request(0)
        store.put_calls("fp", "m", [(r.key("fp"), r, Completion(text="a"))])
        calls = [s for s in seen if s.startswith(("PRAGMA synchronous", "BEGIN", "COMMIT"))]
        assert calls == ["PRAGMA synchronous=FULL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous=NORMAL"]
        seen.clear()
        store.put_metrics(1, {"x": 1.0})
        assert not any(s.startswith("PRAGMA synchronous") for s in seen) and "COMMIT" in seen
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between calls
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_a_failed_call_write_rolls_back_and_restores_normal(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    try:
        r = _request(0)
        with pytest.raises(Exception):
            store.put_calls("fp", "m", [(r.key("fp"), r, object())])  # not a Completion
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert store.get_calls([r.key("fp")]) == {}
    finally:
        store.close()


def _syncs(tmp_path: Path, what: str) -> int:
    """fsync/fdatasync system calls made by a process that commits N writes of one kind."""
    trace = tmp_path / f"{what}.strace"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
         sys.executable, "-c", WRITER, str(tmp_path / f"{what}.sqlite"), what, str(N)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sum(1 for line in trace.read_text().splitlines() if "sync(" in line)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_every_call_commit_reaches_the_disk(tmp_path):
    calls, metrics = _syncs(tmp_path, "calls"), _syncs(tmp_path, "metrics")
    # N commits of calls flush N times more than N commits of metrics, which only flush
    # when the store is created and checkpointed
    assert calls >= metrics + N, (calls, metrics)
    assert metrics < N, metrics
