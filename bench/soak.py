"""Kill the default job with SIGKILL at chosen moments, resume after each kill, and
check that nothing was lost or done twice.

One uninterrupted reference run, then one run killed up to ``--kills`` times and
resumed after each kill. The kills are shared out among five kinds of moment; each
process is killed at the first moment, of a kind with kills left, seen in the run's
log and files:

- ``generation``: a model is answering (the proposer, the target, the held-out
  check: a "... N to do" line with no "done" yet), a random 1-12 s in;
- ``judging``: the moment the target's answers are back, when the verdicts are
  computed and written (the math judge is a program: this window is milliseconds);
- ``training``: inside a training step (a "training ..." line, no "trained ..." yet),
  a random 2-10 s in, so that some kills land after a checkpoint and some before
  (the default job's steps take 10-70 s);
- ``gguf-export``: while a GGUF file is being written (its ``.*.gguf.tmp`` exists);
- ``store-write``: the moment the store's write-ahead log is written (its size or
  modification time changes).

Every model call is logged at the backend (``FAILFORGE_CALL_LOG``, one line per
answer computed, before the store commits it). At the end the script prints, and
exits 1 unless all hold:

- every export file of the killed run equals the reference's, byte for byte;
- the killed run's store holds the same call keys as the reference's;
- no answer was computed twice unless it was in flight at a kill (not yet in the
  store when the process died);
- the seconds of work redone: the killed run's total wall time minus the reference's.

    .venv/bin/python bench/soak.py [--kills 10] [--seed 0] [--work DIR] [-- extra `failforge run` args]
"""

from __future__ import annotations

import argparse
import collections
import filecmp
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAILFORGE = str(Path(sys.executable).with_name("failforge"))
# how ten kills are shared out; each segment is killed at the first moment, of a kind
# still planned, that the run reaches, so that the plan fits in one run
PLAN = ["training", "gguf-export", "generation", "judging", "store-write", "training", "generation", "training", "gguf-export", "generation"]
POLL = 0.02


def run_segment(args: list[str], run_dir: Path, call_log: Path, kinds: collections.Counter | None, rng: random.Random) -> dict:
    """One process of the run, killed at the first moment of one of ``kinds`` still
    planned (None: let it finish)."""
    env = os.environ | {"FAILFORGE_CALL_LOG": str(call_log)}
    log = run_dir / "run.log"
    start_lines = _lines(log)
    t0 = time.perf_counter()
    proc = subprocess.Popen([FAILFORGE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    armed: dict[str, float] = {}  # moment -> when the kill fires, once the moment is seen
    wal = run_dir / "store.sqlite-wal"
    wal_seen = _stamp(wal)
    # a GGUF export cut short by the previous kill leaves its .tmp until the step runs again
    stale_gguf = {p: _stamp(p) for p in _gguf_tmp(run_dir)}
    while proc.poll() is None:
        time.sleep(POLL)
        if not kinds:
            continue
        new = _lines(log)[len(start_lines) :]
        last = new[-1] if new else ""
        now = time.perf_counter()
        for kind in (k for k, n in kinds.items() if n > 0 and k not in armed):
            if _going_on(kind, last, run_dir, stale_gguf, wal, wal_seen):
                armed[kind] = now + rng.uniform(*DELAY[kind]) if kind in DELAY else now
        wal_seen = _stamp(wal)
        for kind, at in list(armed.items()):
            if now < at:
                continue
            # an instant was seen at this poll; a longer moment must still be going on
            if kind not in DELAY or _going_on(kind, last, run_dir, stale_gguf, wal, wal_seen):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"killed": kind, "seconds": time.perf_counter() - t0, "last_line": (new[-1] if new else "")[-120:]}
            del armed[kind]  # the moment passed before the delay ran out: wait for the next one
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"failforge {' '.join(args)} exited {proc.returncode}: {err.strip()[-400:]}")
    return {"killed": None, "seconds": time.perf_counter() - t0}


#: seconds from the start of a moment to the kill, drawn at random; the moments not
#: listed are instants, killed at once
DELAY = {"generation": (1, 12), "training": (2, 10), "gguf-export": (0, 0.5)}


def _going_on(kind: str, last: str, run_dir: Path, stale_gguf: dict, wal: Path, wal_seen: tuple[int, int]) -> bool:
    """Whether the run is at this kind of moment now (``last``: the newest log line)."""
    if kind == "gguf-export":
        return _writing_gguf(run_dir, stale_gguf)
    if kind == "store-write":
        return _stamp(wal) != wal_seen
    pattern = {"generation": r": \d+ to do$", "judging": r"target answers: done", "training": r"INFO training \S+:"}[kind]
    return bool(re.search(pattern, last))


def _gguf_tmp(run_dir: Path) -> list[Path]:
    return list(run_dir.glob("**/.*.gguf.tmp"))


def _writing_gguf(run_dir: Path, stale: dict) -> bool:
    """A GGUF being written now: a .tmp that is new, or a stale one written again."""
    return any(stale.get(p) != _stamp(p) for p in _gguf_tmp(run_dir))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: SQLite rewrites its WAL from the start after a
    checkpoint, so a write does not always make the file grow."""
    try:
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        return 0, 0



def stored_keys(run_dir: Path) -> set[str]:
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as db:
        # hex digits, as the call log writes them (stored as 32 bytes since schema version 2)
        return {k.hex() if isinstance(k, bytes) else k for (k,) in db.execute("select key from calls")}


def logged(call_log: Path) -> list[str]:
    from failforge.run.calllog import read_call_log

    return [x["key"] for x in read_call_log(call_log)] if call_log.exists() else []


def export(run_dir: Path, out: Path) -> None:
    subprocess.run([FAILFORGE, "export", str(run_dir), "-o", str(out)], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for both runs (default: a new temporary one)")
    ap.add_argument("extra", nargs="*", help="more `failforge run` arguments, after --")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="failforge-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    ref, soak = work / "reference", work / "killed"
    ref_log, soak_log = work / "reference-calls.jsonl", work / "killed-calls.jsonl"

    print(f"reference run in {ref}", flush=True)
    ref_seg = run_segment(["run", "--run-dir", str(ref), *a.extra], ref, ref_log, None, rng)
    print(f"  {ref_seg['seconds']:.0f} s, {len(logged(ref_log))} backend answers", flush=True)

    plan = collections.Counter((PLAN * (a.kills // len(PLAN) + 1))[: a.kills])
    segments, committed_at_kill = [], []
    args = ["run", "--run-dir", str(soak), *a.extra]
    while True:
        seg = run_segment(args, soak, soak_log, plan, rng)
        seg["answers_logged"] = len(logged(soak_log))
        segments.append(seg)
        if seg["killed"] is None:
            print(f"  segment {len(segments)}: finished ({seg['seconds']:.0f} s)", flush=True)
            break
        plan[seg["killed"]] -= 1
        committed_at_kill.append((len(logged(soak_log)), stored_keys(soak)))
        print(f"  kill {len(segments)} ({seg['killed']}) after {seg['seconds']:.1f} s; last line: {seg['last_line']}", flush=True)
        args = ["resume", str(soak)]

    # answers computed twice: fine only when the first one was not yet stored at the kill after it
    keys = logged(soak_log)
    seen: dict[str, int] = {}
    repeated_in_flight = repeated_after_commit = 0
    for n, key in enumerate(keys):
        if key in seen:
            first = seen[key]
            kill = next((j for j, (upto, _) in enumerate(committed_at_kill) if upto > first), None)
            if kill is not None and key not in committed_at_kill[kill][1]:
                repeated_in_flight += 1
            else:
                repeated_after_commit += 1
        else:
            seen[key] = n
    counts = collections.Counter(keys)

    export(ref, work / "export-reference")
    export(soak, work / "export-killed")
    files = sorted(p.name for p in (work / "export-reference").iterdir())
    same = [f for f in files if filecmp.cmp(work / "export-reference" / f, work / "export-killed" / f, shallow=False)]
    ref_keys, soak_keys = stored_keys(ref), stored_keys(soak)
    kills = [s for s in segments if s["killed"]]
    total = sum(s["seconds"] for s in segments)
    rows = {f: sum(1 for _ in open(work / "export-reference" / f)) for f in files}
    result = {
        "kills": len(kills),
        "kills_by_moment": dict(collections.Counter(s["killed"] for s in kills)),
        "export_files_equal": f"{len(same)}/{len(files)}",
        "export_rows": rows,
        "stored_calls_reference": len(ref_keys),
        "stored_calls_killed": len(soak_keys),
        "stored_keys_equal": ref_keys == soak_keys,
        "backend_answers_reference": len(logged(ref_log)),
        "backend_answers_killed": len(keys),
        "answers_computed_twice_in_flight": repeated_in_flight,
        "answers_computed_twice_after_commit": repeated_after_commit,
        "most_times_one_answer_was_computed": max(counts.values(), default=0),
        "seconds_reference": round(ref_seg["seconds"], 1),
        "seconds_killed_run_total": round(total, 1),
        "seconds_redone": round(total - ref_seg["seconds"], 1),
        "work": str(work),
    }
    print(json.dumps(result, indent=1))
    (work / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    ok = len(same) == len(files) and ref_keys == soak_keys and repeated_after_commit == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
