"""One process of a launched training step: ``python -m failforge.train.worker STEP_DIR``.

``accelerate launch`` starts this in every process (``train/launch.py``). It reads
the job from the step folder and runs the same step function as an in-process step,
without a run store; rank 0 writes what the driver reads back. Bad input is printed
as one line after ``ERROR_PREFIX`` for the driver to raise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from failforge.errors import FailforgeError
from failforge.train.launch import ERROR_PREFIX, JOB, ROWS
from failforge.train.ranks import is_rank_zero


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m failforge.train.worker STEP_DIR", file=sys.stderr)
        return 2
    step_dir = Path(args[0])
    try:
        job = json.loads((step_dir / JOB).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (step_dir / ROWS).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        print(f"{ERROR_PREFIX}{step_dir}: no readable training job ({e})", file=sys.stderr, flush=True)
        return 2
    _stop_with_driver(job.get("driver_pid"))
    # rank 0's log lines reach the driver (it passes each step's loss on); the others only warn
    logging.basicConfig(level=logging.INFO if is_rank_zero() else logging.WARNING, format="%(message)s", stream=sys.stderr)

    from failforge.train.base import ModelVersion, TrainSettings

    settings = TrainSettings.model_validate(job["settings"])
    base = ModelVersion.model_validate(job["base"])
    common = dict(store=None, name=job["name"], quiet=True, threads=job.get("threads"))
    try:
        if job["kind"] == "sft":
            from failforge.train.sft import train_sft

            train_sft(base, rows, settings, step_dir, **common)
        elif job["kind"] == "dpo":
            from failforge.train.dpo import train_dpo

            ref = ModelVersion.model_validate(job["ref"]) if job.get("ref") else None
            train_dpo(base, rows, settings, step_dir, ref=ref, **common)
        else:
            print(f"{ERROR_PREFIX}{step_dir}: unknown step kind {job['kind']!r}", file=sys.stderr, flush=True)
            return 2
    except FailforgeError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr, flush=True)
        return 2
    return 0


def _stop_with_driver(pid: int | None, every: float = 1.0) -> None:
    """End this process when the run that launched it is gone (killed), so that a
    resumed run never finds an orphan still training in its step folder."""
    if not pid:
        return

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, owned by someone else
                pass

    threading.Thread(target=watch, name="failforge-driver-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
