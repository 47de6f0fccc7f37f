"""`failforge label`: serve a run's pending label requests on a page on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def label(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with prompts waiting for labels.", show_default=False)],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on; 0 = a free one.")] = 0,
    host: Annotated[str, typer.Option("--host", help="Loopback address to listen on.")] = "127.0.0.1",
) -> None:
    """Label a run's waiting prompts in a browser; stops by itself when nothing is left to label."""
    from rich.console import Console

    from failforge.cli.state import state
    from failforge.errors import FailforgeError
    from failforge.labelling.base import labels, pending
    from failforge.labelling.web import LabelServer, loopback_host
    from failforge.report.summary import open_store

    host = loopback_host(host)
    store = open_store(run_dir, readonly=False)  # labels are written to the run
    try:
        waiting = pending(store)
        if not waiting:
            raise FailforgeError(f"{run_dir}: nothing waiting for labels")
        info = Console(stderr=True, quiet=state.quiet, highlight=False, soft_wrap=True)
        server = LabelServer(store, host, port)
        before = len(labels(store))
        info.print(f"{len(waiting)} prompts wait for a label; open this URL (Ctrl-C stops):", markup=False)
        Console(highlight=False, soft_wrap=True).print(server.url, markup=False)
        try:
            server.serve(stop_when=lambda: not pending(store))
        except KeyboardInterrupt:
            pass
        given, left = len(labels(store)) - before, len(pending(store))
        if left:  # stopped by a signal (Ctrl-C), not because the work was done
            info.print(f"stopped: labels given {given}, still waiting {left} (the labels are kept in the run store)", markup=False)
            raise typer.Exit(130)
        info.print(f"nothing left to label: labels given {given}", markup=False)
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.command("label")(label)
