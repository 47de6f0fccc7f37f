"""`failforge run`, `resume`, `generate`, `models`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from failforge.cli import state as cli_state
from failforge.errors import ConfigError


def _console() -> Console:
    return Console(stderr=True, quiet=cli_state.state.quiet)


def _print_summary(summary: dict) -> None:
    out = Console()
    if not out.is_terminal:  # piped output: a readable table, not one squeezed into 80 columns
        out = Console(width=170)
    table = summary.pop("table", None)
    if table is not None and not cli_state.state.quiet:
        out.print(table)
    for k, v in summary.items():
        out.print(f"{k}: {v}", markup=False, highlight=False)


def run(
    config: Path | None = typer.Argument(None, help="YAML config; none = the default job."),
    run_dir: Path | None = typer.Option(None, "--run-dir", "-d", help="Where the run is written (default runs/<method>-<time>)."),
    sets: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="PATH=VALUE",
        help="Override one option by its dotted path, the value read as YAML (e.g. train.proposer.beta=0.2); repeatable. See docs/config.md.",
    ),
) -> None:
    """Run a job: writes a run directory with the config, every model call, records and metrics."""
    from failforge.overrides import build_run_config
    from failforge.run.rundir import start_run

    cfg = build_run_config(config, sets or [])
    _print_summary(start_run(cfg, run_dir, quiet=cli_state.state.quiet, console=_console()))


def resume(
    run_dir: Path = typer.Argument(..., help="A run directory written by `failforge run`."),
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Resume even if the config or an input file (seeds, dataset, weights, judge data) changed since the run started; each change is recorded in the store and the log.",
    ),
    token_budget: int | None = typer.Option(
        None,
        "--token-budget",
        min=1,
        help="Replace the run's token budget (prompt + completion tokens of all its model calls) from now on, e.g. to continue a run that stopped at its budget.",
    ),
) -> None:
    """Continue a killed run: cached calls and finished training steps are not redone.
    Refuses while another process writes the run, or when an input changed."""
    from failforge.run.rundir import resume_run

    _print_summary(
        resume_run(
            run_dir, quiet=cli_state.state.quiet, console=_console(), allow_changed=allow_changed, token_budget=token_budget
        )
    )


def generate(
    prompts: list[str] = typer.Argument(None, help="Prompts (each one user turn)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Known name, GGUF file, checkpoint folder or server model id."),
    backend: str = typer.Option("llamacpp", "--backend", "-b", help="llamacpp | transformers | openai | vllm"),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="Environment variable that holds the API key."),
    max_tokens: int = typer.Option(128, "--max-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", "-t"),
    top_p: float = typer.Option(1.0, "--top-p"),
    n: int = typer.Option(1, "--n"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Print the model's completions for each prompt (no run directory, no cache)."""
    from failforge.config import validate
    from failforge.models import load_model
    from failforge.models.base import SamplingParams
    from failforge.models.spec import ModelSpec
    from failforge.run.preflight import check_model

    prompts = [p for p in (prompts or [])]
    if not prompts:
        raise ConfigError("generate: no prompts given")
    if any(not p.strip() for p in prompts):
        raise ConfigError("generate: empty prompt")
    spec = validate(ModelSpec, {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env}, "model")
    params = validate(
        SamplingParams, {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}, "sampling"
    )
    check_model("model", spec)
    out = Console()
    with load_model(spec) as m:
        for prompt, comps in zip(prompts, m.generate(prompts, params)):
            for c in comps:
                if len(prompts) > 1 or n > 1:
                    out.print(f"[bold]> {prompt}[/bold]" + (f"  [dim](sample {c.sample_index})[/dim]" if n > 1 else ""), highlight=False)
                out.print(c.text, markup=False, highlight=False)
                if not cli_state.state.quiet:
                    _console().print(
                        f"[dim]{c.prompt_tokens} prompt + {c.completion_tokens} completion tokens, {c.latency_s:.2f}s, {c.finish_reason}[/dim]"
                    )


def models() -> None:
    """Known model names and where their weights come from."""
    from failforge.models.registry import KNOWN_MODELS

    table = Table(title="known models")
    for col in ("name", "kind", "package", "file", "licence", "installed"):
        table.add_column(col, overflow="fold")
    for m in KNOWN_MODELS.values():
        try:
            m.path()
            installed = "yes"
        except Exception:
            installed = "no"
        table.add_row(m.name, m.kind, m.package, m.relpath, m.licence, installed)
    out = Console()
    if not out.is_terminal:  # piped output: do not squeeze names into an 80-column table
        out = Console(width=160)
    out.print(table)
    out.print("Any GGUF file or checkpoint folder path also works as --model; backend openai takes the server's model id.")


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(resume)
    app.command()(generate)
    app.command()(models)
