"""Human (or stand-in) labels for prompts: the contract and three labellers.

- ``OracleLabeller``: labels from an already-labelled pool and/or a failforge judge;
- ``TerminalLabeller``: one prompt at a time on a console;
- ``WebLabeller``: a page on 127.0.0.1 (``failforge label RUN_DIR``).

Every label is written to the run store the moment it is given; see ``base``.
"""

from failforge.labelling.base import (
    DEFAULT_CHOICES,
    LabelItem,
    Labeller,
    LabelRecord,
    LabelRequest,
    give_label,
    labels,
    pending,
    requests,
)
from failforge.labelling.oracle import OracleLabeller
from failforge.labelling.terminal import TerminalLabeller
from failforge.labelling.web import LabelServer, WebLabeller

__all__ = [
    "DEFAULT_CHOICES",
    "LabelItem",
    "LabelRecord",
    "LabelRequest",
    "LabelServer",
    "Labeller",
    "OracleLabeller",
    "TerminalLabeller",
    "WebLabeller",
    "give_label",
    "labels",
    "pending",
    "requests",
]
