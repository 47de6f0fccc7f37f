"""Read one run directory into a typed summary (what `failforge runs` lists and
the report's header shows), without touching the models or the config schema."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from failforge.errors import ConfigError
from failforge.run.store import RunStore, StoreOutdated

CONFIG_FILE = "config.yaml"
STORE_FILE = "store.sqlite"

#: "outdated": the store's schema is older than this failforge reads (a resume upgrades it)
Status = Literal["running", "finished", "failed", "killed", "interrupted", "stopped", "outdated", "unknown"]
#: statuses `failforge resume` can continue from
#: "stopped": the token budget was spent (a resume with a larger one continues)
RESUMABLE: frozenset[str] = frozenset({"killed", "interrupted", "failed", "stopped"})


class RunSummary(BaseModel):
    run_dir: str
    name: str = ""
    method: str = ""
    task: str = ""
    #: the stored status, corrected: "running" whose process is gone is "killed"
    status: Status = "unknown"
    resumable: bool = False
    error: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: wall time from start to finish (or to now, or to the last write, when not finished)
    wall_seconds: float | None = None
    iterations: int = 0
    last_iteration: int | None = None
    last_failure_rate: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: time the models spent answering (sum of call latencies, cached answers excluded)
    model_seconds: float = 0.0
    records: dict[str, int] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def status_label(self) -> str:
        return f"{self.status} (resumable)" if self.resumable else self.status


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / STORE_FILE).is_file()


def open_store(run_dir: str | Path, readonly: bool = True) -> RunStore:
    """The run's store, or a one-line error; never creates an empty store by accident.
    Read-only unless asked (``failforge label`` writes labels): looking never migrates."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir}: no such directory")
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir}: not a directory")
    if not is_run_dir(run_dir):
        raise ConfigError(f"{run_dir}: not a run directory (no {STORE_FILE})")
    try:
        return RunStore(run_dir / STORE_FILE, readonly=readonly)
    except ConfigError:
        raise
    except Exception as e:  # a corrupt or foreign file: say which file and why
        raise ConfigError(f"{run_dir / STORE_FILE}: cannot open the run store ({type(e).__name__}: {e})") from e


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def effective_status(meta: dict[str, Any]) -> Status:
    status = meta.get("status")
    if status == "running":
        return "running" if pid_alive(meta.get("pid")) else "killed"
    if status in ("finished", "failed", "interrupted", "stopped"):
        return status
    return "unknown"


def summarize_store(run_dir: str | Path, store: RunStore) -> RunSummary:
    run_dir = Path(run_dir)
    meta = store.meta()
    metrics = store.metrics()
    totals = store.call_totals()
    status = effective_status(meta)
    started, finished = _num(meta.get("started_at")), _num(meta.get("finished_at"))
    wall = None
    if started is not None:
        if finished is not None:
            end = finished
        elif status == "running":
            end = time.time()
        else:  # killed/failed: the last thing the run wrote is the best end we know
            end = _last_write(run_dir)
        wall = max(0.0, end - started) if end is not None else None
    last_it = max(metrics) if metrics else None
    last_fr = None
    for it in sorted(metrics, reverse=True):  # the latest iteration that measured it
        v = metrics[it].get("failure_rate")
        if isinstance(v, (int, float)):
            last_fr = float(v)
            break
    return RunSummary(
        run_dir=str(run_dir),
        name=str(meta.get("name") or run_dir.name),
        method=str(meta.get("method") or ""),
        task=str(meta.get("task") or ""),
        status=status,
        resumable=status in RESUMABLE and (run_dir / CONFIG_FILE).is_file(),
        error=meta.get("error"),
        pid=meta.get("pid"),
        started_at=started,
        finished_at=finished,
        wall_seconds=wall,
        iterations=sum(1 for it in metrics if it >= 1),  # iteration 0 holds run-level results
        last_iteration=last_it,
        last_failure_rate=last_fr,
        calls=int(totals["calls"]),
        prompt_tokens=int(totals["prompt_tokens"]),
        completion_tokens=int(totals["completion_tokens"]),
        model_seconds=float(totals["model_seconds"]),
        records=store.record_kinds(),
        models=meta.get("models") or {},
        judges=meta.get("judges") or {},
    )


def summarize_run(run_dir: str | Path) -> RunSummary:
    """Summary of one run directory; a one-line FailforgeError if it is not one."""
    store = open_store(run_dir)
    try:
        return summarize_store(run_dir, store)
    finally:
        store.close()


def list_runs(folder: str | Path) -> list[RunSummary]:
    """Runs directly inside ``folder`` (or ``folder`` itself if it is a run), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"runs folder {folder}: no such directory")
    dirs = [folder] if is_run_dir(folder) else sorted(p for p in folder.iterdir() if p.is_dir() and is_run_dir(p))
    out = [_summary_or_outdated(d) for d in dirs]
    return sorted(out, key=lambda s: (s.started_at is None, s.started_at or 0.0, s.run_dir))


def _summary_or_outdated(run_dir: Path) -> RunSummary:
    """One old run does not hide the others: it is listed as outdated, with the fix."""
    try:
        return summarize_run(run_dir)
    except StoreOutdated as e:
        return RunSummary(
            run_dir=str(run_dir),
            name=run_dir.name,
            status="outdated",
            resumable=(run_dir / CONFIG_FILE).is_file(),
            error=str(e),
        )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _last_write(run_dir: Path) -> float | None:
    times = [p.stat().st_mtime for p in (run_dir / STORE_FILE, run_dir / (STORE_FILE + "-wal"), run_dir / "run.log") if p.exists()]
    return max(times) if times else None
