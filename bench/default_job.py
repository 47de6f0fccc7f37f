"""The default job's wall time at two versions of the code, same config and seed, run alternately.

    .venv/bin/python bench/default_job.py [--before REV] [--rounds 1] [--work DIR]

``--before`` is checked out into a git worktree (``WORK/before-src``); the other side
is this checkout. Each round runs ``failforge run`` (the default job) once per side,
before first, with ``PYTHONPATH`` pointing at that side's ``src``, in one Python
environment (this one). For each run it prints the wall time, the seconds spent in
training steps (the "trained NAME: ..., X s" lines of the run log: loading, the
optimizer steps, merging and GGUF export), the rest, and the failure rate of each
iteration; at the end, the ratio after/before of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAILFORGE = str(Path(sys.executable).with_name("failforge"))
TRAINED = re.compile(r"INFO trained (\S+): .*, ([0-9.]+)s$")


def checkout(rev: str, where: Path) -> Path:
    if not where.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev], check=True,
                       stdout=subprocess.DEVNULL)
    return where / "src"


def one_run(src: Path, run_dir: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(src)}
    t = time.perf_counter()
    proc = subprocess.run([FAILFORGE, "-q", "run", "--run-dir", str(run_dir)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failforge run ({src}) exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    trained = {}
    for line in (run_dir / "run.log").read_text().splitlines():
        if m := TRAINED.search(line):
            trained[m.group(1)] = float(m.group(2))
    from failforge.run.store import RunStore

    store = RunStore(run_dir / "store.sqlite", readonly=True)
    rates = [round(m["failure_rate"], 3) for _, m in sorted(store.metrics().items()) if "failure_rate" in m]
    store.close()
    return {"wall_s": round(wall, 1), "training_s": round(sum(trained.values()), 1),
            "rest_s": round(wall - sum(trained.values()), 1), "steps": trained, "failure_rates": rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="1caa15c^", help="the older revision (default: before training picked its plan by capability)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="failforge-default-job-"))
    work.mkdir(parents=True, exist_ok=True)
    sides = {"before": checkout(a.before, work / "before-src"), "after": ROOT / "src"}
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(a.rounds):
        for side, src in sides.items():
            res = one_run(src, work / f"{side}-{r}")
            results[side].append(res)
            print(f"round {r + 1} {side}: {json.dumps(res)}", flush=True)
    med = {s: {k: statistics.median(x[k] for x in rs) for k in ("wall_s", "training_s", "rest_s")} for s, rs in results.items()}
    for k in ("wall_s", "training_s", "rest_s"):
        print(f"{k}: before {med['before'][k]:.1f}, after {med['after'][k]:.1f}, after/before {med['after'][k] / med['before'][k]:.2f}")
    (work / "default_job.json").write_text(json.dumps({"before": a.before, "results": results, "medians": med}, indent=1) + "\n")


if __name__ == "__main__":
    main()
