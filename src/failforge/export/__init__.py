"""Training-ready exports of a run (DPO pairs, SFT data, failures, critiques), every row with its provenance."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from failforge.errors import ConfigError

from failforge.export.rows import WHATS, build_rows, check_what
from failforge.export.writers import FORMATS, push_to_hub, write_export
from failforge.report.summary import open_store


class ExportResult(BaseModel):
    path: str
    format: str
    rows: dict[str, int]
    pushed_to: str | None = None


def export_run(
    run_dir: str | Path,
    fmt: str,
    what: str,
    out: str | Path,
    push_repo: str | None = None,
    quiet: bool = False,
) -> ExportResult:
    """Export ``what`` (pairs|sft|failures|analyses|all) of one run as ``fmt`` (jsonl|parquet|hf) to ``out``."""
    kinds = check_what(what)  # bad flags fail before the store is opened
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown value {fmt!r} (choose from {', '.join(FORMATS)})")
    if push_repo and fmt != "hf":
        raise ConfigError("--push-to-hub: needs --format hf")
    store = open_store(run_dir)
    try:
        tables = {k: build_rows(store, k) for k in kinds}
    finally:
        store.close()
    path = write_export(tables, fmt, Path(out), as_folder=len(kinds) > 1, quiet=quiet)
    if push_repo:
        push_to_hub(path, push_repo, quiet=quiet)
    return ExportResult(path=str(path), format=fmt, rows={k: len(v) for k, v in tables.items()}, pushed_to=push_repo)


__all__ = ["FORMATS", "WHATS", "ExportResult", "export_run"]
