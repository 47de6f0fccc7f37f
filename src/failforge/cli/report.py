"""CLI commands `report`, `export` and `runs`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer


def _quiet() -> bool:
    from failforge.cli.state import state

    return state.quiet


def _console():
    from rich.console import Console

    return Console(quiet=_quiet())


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dirs: Annotated[list[Path], typer.Argument(help="One run directory, or several to compare.", show_default=False)],
        output: Annotated[
            Path | None,
            typer.Option("-o", "--output", help="HTML file to write [default: RUN_DIR/report.html, or compare.html for several runs]."),
        ] = None,
        max_examples: Annotated[int, typer.Option(min=0, help="Failure examples shown per run.")] = 500,
    ) -> None:
        """Write one self-contained HTML report (curves, failures, judges) of one run or a comparison of several."""
        from failforge.report.html import write_report

        out = output or (run_dirs[0] / "report.html" if len(run_dirs) == 1 else Path("compare.html"))
        path = write_report(run_dirs, out, max_examples=max_examples)
        _console().print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)", highlight=False)

    @app.command("export")
    def export(
        run_dir: Annotated[Path, typer.Argument(help="The run directory.", show_default=False)],
        output: Annotated[Path, typer.Option("-o", "--output", help="File (one kind as jsonl/parquet) or folder (--what all, or hf).", show_default=False)],
        fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | parquet | hf (a datasets DatasetDict, save_to_disk).")] = "jsonl",
        what: Annotated[str, typer.Option("--what", "-w", help="pairs (DPO) | sft | failures | analyses (Mistake Analysis) | all.")] = "all",
        push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="Also push the DatasetDict to this hub repo (with --format hf).")] = None,
    ) -> None:
        """Export training-ready rows with provenance (method, task, iteration, fingerprints, verdict, cost)."""
        from failforge.export import export_run

        res = export_run(run_dir, fmt, what, output, push_repo=push_to_hub, quiet=_quiet())
        counts = ", ".join(f"{k}: {n:,} rows" for k, n in res.rows.items())
        console = _console()
        console.print(f"wrote {res.path} ({res.format}; {counts})", highlight=False)
        if res.pushed_to:
            console.print(f"pushed to the hub: {res.pushed_to}", highlight=False)

    @app.command("runs")
    def runs(
        folder: Annotated[Path, typer.Argument(help="Folder holding run directories.")] = Path("runs"),
        as_json: Annotated[bool, typer.Option("--json", help="Print the summaries as JSON.")] = False,
    ) -> None:
        """List the runs in a folder: status (killed = its process is gone), method, task, headline numbers."""
        from failforge.report.html import fmt_duration
        from failforge.report.summary import list_runs

        summaries = list_runs(folder)
        if as_json:
            typer.echo(json.dumps([s.model_dump() | {"tokens": s.tokens} for s in summaries], indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()  # the listing is the command's output: not silenced by --quiet
        if not summaries:
            console.print(f"no runs in {folder}", highlight=False)
            return
        from rich import box

        table = Table(title=f"runs in {folder}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        wide = console.width >= 120  # narrow terminals drop the start time rather than wrap every cell
        columns = [
            ("run", {"overflow": "fold"}),
            ("status", {}),
            ("method", {}),
            ("task", {}),
            ("iter.", {"justify": "right"}),
            ("fail rate", {"justify": "right"}),
            ("calls", {"justify": "right"}),
            ("tokens", {"justify": "right"}),
            ("wall time", {"justify": "right"}),
        ] + ([("started (UTC)", {"no_wrap": True})] if wide else [])
        for col, kw in columns:
            table.add_column(col, **kw)
        style = {"finished": "green", "running": "yellow", "interrupted": "yellow", "stopped": "yellow", "killed": "red", "failed": "red"}
        for s in summaries:
            cells = [
                Path(s.run_dir).name,
                f"[{style.get(s.status, 'dim')}]{s.status_label}[/]",
                s.method,
                s.task,
                str(s.iterations),
                "\u2014" if s.last_failure_rate is None else f"{s.last_failure_rate:.3f}",
                f"{s.calls:,}",
                f"{s.tokens:,}",
                fmt_duration(s.wall_seconds),
            ]
            if wide:
                cells.append("\u2014" if s.started_at is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.started_at)))
            table.add_row(*cells)
        console.print(table)
