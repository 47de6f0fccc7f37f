"""The `failforge` command line.

Every command lives in a module of this package with a ``register(app)`` function.
Errors the user can fix (``FailforgeError``, invalid input) print one line and exit
with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from failforge import __version__
from failforge.cli import state as cli_state
from failforge.errors import BudgetReached, FailforgeError

app = typer.Typer(
    name="failforge",
    help="Find where a language model fails, forge training data from the failures, train, attack again.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = ["run", "judges", "datasets", "report", "label", "judge_train"]


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info lines."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    cli_state.state.quiet = quiet
    cli_state.state.debug = debug


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"failforge.cli.{_name}")
    except ModuleNotFoundError as _e:  # a command group not present in this install
        if _e.name != f"failforge.cli.{_name}":
            raise
        continue
    _module.register(app)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="failforge", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: unknown option, missing argument
        if type(e).__name__ == "NoArgsIsHelpError" and getattr(e, "ctx", None) is not None:
            sys.exit(0)
        if debug:
            raise
        err.print(f"error: {_one_line(e.format_message())}", markup=False)
        sys.exit(2)
    except BudgetReached as e:  # a clean stop, not an error
        err.print(f"stopped: {_one_line(e)}", markup=False)
        sys.exit(3)
    except FailforgeError as e:
        if debug:
            raise
        err.print(f"error: {_one_line(e)}", markup=False)
        sys.exit(2)
    except ValidationError as e:
        if debug:
            raise
        from failforge.config import format_validation_error

        err.print(f"error: {_one_line(format_validation_error(e, 'input'))}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
