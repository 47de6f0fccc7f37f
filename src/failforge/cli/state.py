"""Options that the top-level callback sets for every command.

Only the CLI reads this; library code gets ``quiet`` and friends passed in.
"""

from dataclasses import dataclass


@dataclass
class CliState:
    quiet: bool = False
    debug: bool = False


state = CliState()
