"""A run on the embedded llama.cpp model, killed while its batch decodes: the answers
that finished are stored already (no barrier), and the resume sends only the rest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from runcli import stored_calls

N = 8


def _failforge(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )  # fmt: skip


@pytest.mark.slow
def test_killed_mid_batch_keeps_finished_answers_and_resumes_the_rest(tmp_path):
    cfg = tmp_path / "answer.yaml"
    # 8 prompts on 2 slots: answers finish one by one while the others decode
    cfg.write_text(f"method: answer\nlimit: {N}\nmodel: {{batch_size: 2, n_threads: 2}}\nsampling: {{max_tokens: 48}}\n")
    run_dir = tmp_path / "run"
    store = run_dir / "store.sqlite"
    run = _failforge("run", str(cfg), "--run-dir", str(run_dir))
    deadline = time.monotonic() + 300
    while stored_calls(store) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(30)
    assert run.returncode == -signal.SIGKILL, run.stdout.read()
    kept = stored_calls(store)
    assert 2 <= kept < N, kept  # stored while the batch was still decoding

    resumed = _failforge("resume", str(run_dir))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-2000:]
    sent = int(re.search(r"sent_this_process: (\d+)", out).group(1))
    assert sent == N - kept  # only the missing ones were asked
    assert stored_calls(store) == N
