"""Options that the top-level callback sets for every command (the CLI edge only)."""

from dataclasses import dataclass


@dataclass
class CliState:
    quiet: bool = False
    debug: bool = False


state = CliState()
quiet = False  # mirrors state.quiet for modules that read the flag directly
