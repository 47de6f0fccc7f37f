"""User-facing errors.

Anything raised as a ``FailforgeError`` is bad input or an unreachable resource the
user can fix: the CLI prints its message on one line and exits with code 2.
"""


class FailforgeError(Exception):
    """A problem the user can fix (bad config, missing file, unreachable server)."""


class ConfigError(FailforgeError):
    """The configuration is invalid."""


class ModelUnavailable(FailforgeError):
    """A model could not be loaded or reached."""


class DatasetError(FailforgeError):
    """A dataset could not be loaded, verified or parsed."""


class BudgetReached(Exception):
    """The run spent its token budget: it stops cleanly and a resume with a larger budget continues.

    Not an error: the CLI prints the message on one line and exits with code 3.
    """


class TrainingFailed(FailforgeError):
    """A training step's own processes failed; the message names their log."""
