"""The run directory's life: create (after pre-flight), execute, resume.

Layout::

    RUN_DIR/
      config.yaml     the validated config snapshot (what ``resume`` re-reads)
      store.sqlite    every model call, record, metric and training step (run/store.py)
      run.log         what happened, with timings
      run.lock        who is writing the run now (run/lock.py); absent when no one is
      models/         trained adapters and exported weights, one folder per version

One process writes a run directory at a time (the lock). The store meta pins the
sha256 of the config snapshot and of every input the run read (run/inputs.py); a
resume refuses inputs that changed unless ``allow_changed``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from failforge.config import dump_config, load_run_config
from failforge.errors import BudgetReached, ConfigError
from failforge.judges.measured import summary_lines
from failforge.methods import get_method
from failforge.run.context import RunContext
from failforge.run.inputs import InputLedger
from failforge.run.lock import RunLock
from failforge.run.store import RunStore

CONFIG_FILE = "config.yaml"
STORE_FILE = "store.sqlite"
LOG_FILE = "run.log"


def default_run_dir(config: BaseModel, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{config.method}-{stamp}"


def start_run(config: BaseModel, run_dir: Path | None = None, quiet: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Pre-flight, then create the run directory and execute the method."""
    method_cls = get_method(config.method)
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    _check_new_run_dir(run_dir)
    # Nothing is written before this passes, so bad input leaves no half-made run.
    ledger = InputLedger(exclude=run_dir)
    with ledger.active():
        method_cls.check(config)

    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"run directory {run_dir}: cannot create it ({e.strerror})") from None
    try:
        lock = RunLock.acquire(run_dir, "run")
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    with lock:
        _check_new_run_dir(run_dir)  # another `run` may have claimed it while this one checked
        tmp = run_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(dump_config(config), encoding="utf-8")
        os.replace(tmp, run_dir / CONFIG_FILE)
        ledger.pin_file("config", (run_dir / CONFIG_FILE).resolve())
        store = RunStore(run_dir / STORE_FILE)
        return _execute(method_cls, config, run_dir, store, ledger, lock, quiet, console, resumed=False)


def resume_run(
    run_dir: Path,
    quiet: bool = False,
    console: Console | None = None,
    allow_changed: bool = False,
    token_budget: int | None = None,
) -> dict[str, Any]:
    """Continue a run; refuses when another process writes it, or when an input changed
    (unless ``allow_changed``, which records each change). ``token_budget`` replaces the
    run's budget from now on (recorded in the store meta)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir}: no such directory")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    with RunLock.acquire(run_dir, "resume") as lock:
        config = load_run_config(run_dir / CONFIG_FILE)
        method_cls = get_method(config.method)
        store = RunStore(run_dir / STORE_FILE)
        try:
            ledger = InputLedger(store.meta().get("inputs"), allow_changed=allow_changed, exclude=run_dir)
            ledger.recheck()
            ledger.pin_file("config", (run_dir / CONFIG_FILE).resolve())
            with ledger.active():
                method_cls.check(config)
        except BaseException:
            store.close()
            raise
        if token_budget is not None:
            store.set_meta(token_budget=token_budget)
        return _execute(method_cls, config, run_dir, store, ledger, lock, quiet, console, resumed=True)


def _check_new_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir}: exists and is not a directory")
    if (run_dir / STORE_FILE).exists() or (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"run directory {run_dir} already holds a run: use `failforge resume {run_dir}` or pick another --run-dir")


def _execute(
    method_cls,
    config,
    run_dir: Path,
    store: RunStore,
    ledger: InputLedger,
    lock: RunLock,
    quiet: bool,
    console: Console | None,
    resumed: bool,
) -> dict[str, Any]:
    logger = _run_logger(run_dir)
    meta = store.meta()
    # a budget given to `resume` replaces the config's from then on
    budget = meta.get("token_budget", getattr(config, "token_budget", None))
    ctx = RunContext(run_dir, store, console=console, quiet=quiet, logger=logger, token_budget=budget)
    if lock.previous is not None:
        ctx.log(f"took over the lock of {lock.previous.describe()}, which is gone")
    store.set_meta(
        method=config.method,
        task=getattr(config, "task", ""),
        name=config.name,
        status="running",
        pid=os.getpid(),
        started_at=meta.get("started_at", time.time()),
        resumed_at=time.time() if resumed else None,
        resumes=meta.get("resumes", 0) + (1 if resumed else 0),
    )
    ctx.log(f"{'resuming' if resumed else 'starting'} {config.method} in {run_dir}")
    if budget is not None:
        ctx.log(f"token budget {budget:,}: {store.tokens_spent():,} tokens spent so far")
    ledger.attach(store, ctx.log)
    try:
        with ledger.active():
            summary = method_cls(config, ctx).run()
    except BudgetReached as e:
        store.set_meta(status="stopped", error=str(e).replace("RUN_DIR", str(run_dir)))
        ctx.log(f"stopped: {e}".replace("RUN_DIR", str(run_dir)))
        raise BudgetReached(str(e).replace("RUN_DIR", str(run_dir))) from None
    except KeyboardInterrupt:
        store.set_meta(status="interrupted")
        ctx.log("interrupted: `failforge resume` continues where this stopped")
        raise
    except BaseException as e:
        store.set_meta(status="failed", error=f"{type(e).__name__}: {e}")
        ctx.log(f"failed: {type(e).__name__}: {e}")
        raise
    else:
        store.set_meta(status="finished", finished_at=time.time(), totals=store.call_totals())
        summary = {**summary, **summary_lines(store.meta().get("judges"))}  # each judge's measured error rate
        ctx.log("finished: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "table"))
        return {"run_dir": str(run_dir), **summary}
    finally:
        ctx.close()
        store.close()
        for h in list(logger.handlers):
            h.close()
            logger.removeHandler(h)


def _run_logger(run_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"failforge.run.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger
