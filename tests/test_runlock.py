"""One writer per run directory: a second `run`/`resume` refuses in one line, a lock
left by a dead process is taken over (and logged), a lock from another host is not."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from runcli import cli

from failforge.run.lock import LOCK_FILE, Holder, RunLock, RunLocked, process_start
from failforge.run.store import RunStore


def _config(tmp_path: Path, base_url: str, n: int = 3) -> Path:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(n)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: answer\nmodel: {{backend: openai, base_url: '{base_url}', model: fake}}\nprompts: '{prompts}'\n")
    return cfg


@pytest.fixture
def finished_run(tmp_path):
    with FakeOpenAI() as srv:
        run_dir = tmp_path / "run"
        proc = cli("run", str(_config(tmp_path, srv.base_url)), "--run-dir", str(run_dir), timeout=120)
        assert proc.returncode == 0, proc.stderr
        yield run_dir, srv


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until it is killed."""
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from failforge.run.lock import RunLock
        RunLock.acquire(Path({str(run_dir)!r}), "resume")
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _kill(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)


def test_a_finished_run_leaves_no_lock(finished_run):
    run_dir, _ = finished_run
    assert not (run_dir / LOCK_FILE).exists()


def test_second_writer_refuses_in_one_line_and_writes_nothing(finished_run):
    run_dir, _ = finished_run
    holder = _hold_lock(run_dir)
    try:
        before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
        proc = cli("resume", str(run_dir), timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line
        assert f"run directory {run_dir} is in use by pid {holder.pid} on {socket.gethostname()}" in line
        assert "failforge resume" in line
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    finally:
        _kill(holder)


def test_run_into_a_locked_empty_folder_refuses_and_keeps_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _hold_lock(run_dir)
    try:
        with FakeOpenAI() as srv:
            proc = cli("run", str(_config(tmp_path, srv.base_url)), "--run-dir", str(run_dir), timeout=120)
        assert proc.returncode == 2 and f"is in use by pid {holder.pid}" in proc.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # the holder's lock, nothing else
    finally:
        _kill(holder)


def test_two_resumes_at_once_one_works_one_refuses(tmp_path):
    with FakeOpenAI(delay_s=0.3) as srv:
        cfg = _config(tmp_path, srv.base_url, n=6)
        run_dir = tmp_path / "run"
        first = cli("run", str(cfg), "--run-dir", str(run_dir), timeout=120)
        assert first.returncode == 0, first.stderr
        store = RunStore(run_dir / "store.sqlite")
        with store.transaction() as c:  # forget the answers, so a resume has work to do
            c.execute("DELETE FROM calls")
        store.close()
        calls_before = srv.calls
        argv = [sys.executable, "-c", "from failforge.cli import main; main()", "-q", "resume", str(run_dir)]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    refused = next(err for code, err in outs if code == 2)
    assert "is in use by pid" in refused and refused.count("\n") == 1
    assert srv.calls - calls_before == 6  # every prompt answered once, by the one writer


def test_lock_of_a_killed_process_is_taken_over_and_logged(finished_run):
    run_dir, _ = finished_run
    holder = _hold_lock(run_dir)
    pid = holder.pid
    _kill(holder)
    assert (run_dir / LOCK_FILE).exists()  # SIGKILL leaves the file behind
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 0, proc.stderr
    log = (run_dir / "run.log").read_text()
    assert f"took over the lock of pid {pid} on {socket.gethostname()}" in log and "which is gone" in log
    assert not (run_dir / LOCK_FILE).exists()


def test_lock_from_another_host_is_not_taken_over(finished_run):
    run_dir, _ = finished_run
    holder = Holder(pid=4242, host="elsewhere", started_at=time.time(), command="resume")
    (run_dir / LOCK_FILE).write_text(json.dumps(holder.__dict__))
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 2
    assert "locked by pid 4242 on elsewhere" in proc.stderr and f"delete {run_dir / LOCK_FILE}" in proc.stderr


def test_a_reused_pid_does_not_keep_a_dead_lock(tmp_path):
    """The lock names the process start time: a live process with the same pid is not the holder."""
    me = os.getpid()
    stale = Holder(pid=me, host=socket.gethostname(), started_at=1.0, command="run", process_start="1")
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale.__dict__))
    # the file names this very process, which must not count as a live other holder
    lock = RunLock.acquire(tmp_path, "resume")
    try:
        assert lock.previous == stale
    finally:
        lock.release()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_start(other.pid) is not None
        reused = Holder(pid=other.pid, host=socket.gethostname(), started_at=1.0, command="run", process_start="1")
        (tmp_path / LOCK_FILE).write_text(json.dumps(reused.__dict__))
        with RunLock.acquire(tmp_path, "resume") as lock:
            assert lock.previous == reused  # same pid, another process: taken over
        live = Holder(pid=other.pid, host=socket.gethostname(), started_at=1.0, command="run", process_start=process_start(other.pid))
        (tmp_path / LOCK_FILE).write_text(json.dumps(live.__dict__))
        with pytest.raises(RunLocked, match=f"in use by pid {other.pid}"):
            RunLock.acquire(tmp_path, "resume")  # the holder runs (on a filesystem where flock saw nothing)
    finally:
        other.kill()
        other.wait()


def test_released_lock_cannot_be_shared(tmp_path):
    """Two holders in one process conflict too (flock is per open file)."""
    with RunLock.acquire(tmp_path, "run"):
        with pytest.raises(RunLocked):
            RunLock.acquire(tmp_path, "resume")
    with RunLock.acquire(tmp_path, "resume") as again:
        assert again.previous is None
