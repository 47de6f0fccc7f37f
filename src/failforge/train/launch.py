"""A training step as processes of its own: ``accelerate launch`` over the step folder.

This is TRL's own convention for training beyond one process: ``accelerate launch``
starts N processes (DDP over gloo on CPUs, NCCL on GPUs; FSDP or DeepSpeed ZeRO
from an ``accelerate config`` file; ``--num_machines`` and a SLURM ``srun`` across
nodes), and the Trainer inside each one shards the batches and averages the
gradients. The run's process (the driver) does not train:

1. it writes the step's job into the step folder (``job.json``: the parent version,
   the DPO reference, the settings, the thread count; ``rows.jsonl``: the data), so
   the step folder on shared storage is all the processes need;
2. it runs ``accelerate launch -m failforge.train.worker STEP_DIR`` and waits,
   writing the processes' output to ``launch.log`` and passing each step's loss on
   to its own log;
3. rank 0 alone writes ``train_log.jsonl``, ``plan.json``, the weights, the GGUF and
   ``DONE`` (``train/ranks.py``); no rank opens the run store;
4. the driver imports ``train_log.jsonl`` and ``plan.json`` into the run store and
   reads the version from ``DONE``.

A killed step resumes like one trained in process: the Trainer's checkpoints are in
the step folder, and the next launch starts from the newest. The workers watch the
driver's pid and stop when it is gone, so a killed run leaves no process training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from failforge.errors import ConfigError, TrainingFailed
from failforge.run.store import RunStore
from failforge.train.base import ModelVersion, TrainSettings
from failforge.train.checkpointing import StepDir, atomic_write_text
from failforge.train.device import PLAN_FILE

log = logging.getLogger("failforge.train")

JOB = "job.json"
ROWS = "rows.jsonl"
LAUNCH_LOG = "launch.log"
#: how a worker reports bad input to the driver: the rest of the line is the one-line message
ERROR_PREFIX = "failforge-training-error: "
_STEP_LINE = re.compile(r" step \d+ loss ")

Kind = Literal["sft", "dpo"]


def launch_command(settings: TrainSettings, step_dir: Path, *, cuda: bool, port: int, threads: int | None = None) -> list[str]:
    """The ``accelerate launch`` command line for one step (``threads``: CPU threads per process)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(settings.processes)]
    if settings.accelerate_config:
        cmd += ["--config_file", settings.accelerate_config]
    else:
        # every value given, so accelerate neither reads a default config file nor warns about it
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if not cuda:
            cmd += ["--cpu", "--num_cpu_threads_per_process", str(threads or 1)]
        elif settings.processes > 1:
            cmd += ["--multi_gpu"]
    if settings.processes > 1:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", "failforge.train.worker", str(step_dir)]


def train_launched(
    kind: Kind,
    base: ModelVersion,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    out_dir: str | Path,
    *,
    name: str,
    store: RunStore | None = None,
    ref: ModelVersion | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelVersion:
    """Train one SFT or DPO step in processes of its own; returns the new version."""
    if settings.accelerate_config and not Path(settings.accelerate_config).is_file():
        raise ConfigError(f"train.accelerate_config {settings.accelerate_config}: no such file")
    step = step_folder(kind, base, rows, settings, out_dir, ref)  # bad rows fail here, before any process starts
    if (done := step.done()) is None:
        step.root.mkdir(parents=True, exist_ok=True)
        write_job(step.root, kind, base, rows, settings, name=name, ref=ref, threads=threads)
        run_processes(settings, step.root, name, threads, progress)
        if (done := step.done()) is None:
            raise TrainingFailed(f"{name}: the training processes ended without finishing the step; see {step.root / LAUNCH_LOG}")
    import_step(step.root, name, store)
    return done


def step_folder(kind: Kind, base: ModelVersion, rows: list[dict[str, Any]], settings: TrainSettings, out_dir: str | Path, ref: ModelVersion | None) -> StepDir:
    """The same ``StepDir`` the worker will build, so that a finished step or a folder
    holding another step is recognised here."""
    if kind == "sft":
        from failforge.train.sft import sft_rows

        return StepDir(out_dir, "sft", base, settings, sft_rows(rows))
    from failforge.train.dpo import dpo_rows

    return StepDir(out_dir, "dpo", base, settings, dpo_rows(rows), extra={"ref": (ref or base).fingerprint})


def write_job(
    step_dir: Path,
    kind: Kind,
    base: ModelVersion,
    rows: list[dict[str, Any]],
    settings: TrainSettings,
    *,
    name: str,
    ref: ModelVersion | None,
    threads: int | None,
) -> None:
    """Everything the worker processes need, in the step folder (rows first, the job last)."""
    atomic_write_text(step_dir / ROWS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    job = {
        "kind": kind,
        "name": name,
        "base": base.model_dump(mode="json"),
        "ref": ref.model_dump(mode="json") if ref is not None else None,
        "settings": settings.model_dump(mode="json"),
        "threads": threads,
        "driver_pid": os.getpid(),
    }
    atomic_write_text(step_dir / JOB, json.dumps(job, indent=2))


def run_processes(
    settings: TrainSettings, step_dir: Path, name: str, threads: int | None, progress: Callable[[str], None] | None
) -> None:
    import torch

    cmd = launch_command(settings, step_dir, cuda=torch.cuda.is_available(), port=_free_port(), threads=threads)
    say = progress or log.info
    say(f"{name}: {settings.processes} training process(es) under accelerate launch; their output goes to {step_dir / LAUNCH_LOG}")
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    error, last = None, ""
    with (step_dir / LAUNCH_LOG).open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            line = line.rstrip("\n")
            if line.startswith(ERROR_PREFIX):
                error = line[len(ERROR_PREFIX) :]
            elif _STEP_LINE.search(line):
                say(line.strip())
            if line.strip():
                last = line.strip()
        code = proc.wait()
    if error is not None:
        raise ConfigError(error)
    if code != 0:
        raise TrainingFailed(f"{name}: the training processes exited with code {code} ({last[-200:]}); see {step_dir / LAUNCH_LOG}")


def import_step(step_dir: Path, name: str, store: RunStore | None) -> None:
    """Rank 0's step log and device plan into the run store (the driver is its only writer)."""
    if store is None:
        return
    steps = step_dir / "train_log.jsonl"
    if steps.exists():
        for line in steps.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            loss = row.pop("loss")
            store.put_train_step(name, row.pop("step"), loss, row.pop("seconds", None), **row)
    plan = step_dir / PLAN_FILE
    if plan.exists():
        store.put_records("train_plan", [(name, json.loads(plan.read_text(encoding="utf-8")))])


def _free_port() -> int:
    """A free TCP port for the processes' rendezvous (two steps may train at once on one host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
