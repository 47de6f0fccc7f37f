"""The labelling contract: items to label, the labels given, and who waits for what.

A ``Labeller`` gets ``LabelItem``s and a list of choices and returns ``id -> label``
for every item it could label. Everything goes through the run store, so a labelling
session can stop and resume without losing one label, and another process (the
``failforge label`` page) can see what is waiting:

- ``label_request`` records (key = item id): what a labeller is waiting for, with the
  text, round, judge's guess and choices. A call's items share a ``batch`` id and keep
  their order (``index``), so a page can show "k of n" for the whole call.
- ``label`` records (key = item id): the label given, by whom and when. A label is
  written the moment it is given; an undo writes ``label: null`` over it and a
  relabel writes the new one (``put_records`` upserts on (kind, key)).

An item is *pending* while it has a request and no label among its request's choices.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from failforge.errors import ConfigError
from failforge.run.store import RunStore

LABEL_KIND = "label"
REQUEST_KIND = "label_request"
DEFAULT_CHOICES: tuple[str, ...] = ("problematic", "benign")
#: keys 1..9 pick a choice, so at most nine
MAX_CHOICES = 9


class LabelItem(BaseModel):
    """One text to label."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    round: int | None = None
    #: the judge's current guess, shown to the labeller
    guess: str | None = None
    #: e.g. meta["label"] for an item from an already-labelled pool
    meta: dict[str, Any] = Field(default_factory=dict)


class LabelRecord(BaseModel):
    """A label as stored (records kind ``label``, key = item id)."""

    KIND: ClassVar[str] = LABEL_KIND

    id: str
    text: str
    #: one of the choices, or None after an undo
    label: str | None
    labeller: str
    round: int | None = None
    given_at: float


class LabelRequest(BaseModel):
    """An item a labeller is waiting for (records kind ``label_request``, key = item id)."""

    KIND: ClassVar[str] = REQUEST_KIND

    id: str
    text: str
    round: int | None = None
    guess: str | None = None
    choices: list[str]
    #: the labeller call this item belongs to, and its place in that call
    batch: str
    index: int
    requested_at: float

    def item(self) -> LabelItem:
        return LabelItem(id=self.id, text=self.text, round=self.round, guess=self.guess)


# --- choices ------------------------------------------------------------------------


def check_choices(choices: Iterable[str] | None) -> list[str]:
    """The choices to offer; a one-line error for an unusable list."""
    out = list(DEFAULT_CHOICES if choices is None else choices)
    if len(out) < 2:
        raise ConfigError(f"labelling: need at least two choices, got {out}")
    if len(out) > MAX_CHOICES:
        raise ConfigError(f"labelling: at most {MAX_CHOICES} choices (keys 1-9), got {len(out)}")
    if any(not isinstance(c, str) or not c.strip() for c in out):
        raise ConfigError(f"labelling: every choice must be a non-empty string, got {out}")
    if len(set(out)) != len(out):
        raise ConfigError(f"labelling: choices repeat: {out}")
    return out


# --- writing ---------------------------------------------------------------------------


def write_requests(store: RunStore, items: list[LabelItem], choices: list[str]) -> str:
    """Record that these items wait for a label; returns the batch id (stable for the same ids)."""
    batch = hashlib.sha256("\n".join(i.id for i in items).encode()).hexdigest()[:12]
    now = time.time()
    rows = [
        LabelRequest(
            id=i.id, text=i.text, round=i.round, guess=i.guess, choices=list(choices), batch=batch, index=k, requested_at=now
        )
        for k, i in enumerate(items)
    ]
    store.put_records(REQUEST_KIND, [(r.id, r.model_dump()) for r in rows])
    return batch


def give_label(store: RunStore, item: LabelItem | LabelRequest, label: str | None, labeller: str) -> LabelRecord:
    """Write one label now (None clears it: an undo). Overwrites an earlier label of the item."""
    rec = LabelRecord(id=item.id, text=item.text, label=label, labeller=labeller, round=item.round, given_at=time.time())
    store.put_records(LABEL_KIND, [(rec.id, rec.model_dump())], iteration=item.round)
    return rec


# --- reading ---------------------------------------------------------------------------


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def label_records(store: RunStore) -> dict[str, LabelRecord]:
    """Every stored label record by item id, undone ones (label None) included."""
    return {r["_key"]: LabelRecord.model_validate(_strip(r)) for r in store.records(LABEL_KIND)}


def labels(store: RunStore) -> dict[str, str]:
    """Item id -> label, for every item that has one."""
    return {k: r.label for k, r in label_records(store).items() if r.label is not None}


def requests(store: RunStore) -> list[LabelRequest]:
    """Every request, oldest call first, in each call's order."""
    rows = [LabelRequest.model_validate(_strip(r)) for r in store.records(REQUEST_KIND)]
    return sorted(rows, key=lambda r: (r.requested_at, r.batch, r.index))


def is_labelled(request: LabelRequest, given: dict[str, str]) -> bool:
    return given.get(request.id) in request.choices


def pending(store: RunStore) -> list[LabelItem]:
    """Items requested and not yet labelled, in the order they were requested."""
    given = labels(store)
    return [r.item() for r in requests(store) if not is_labelled(r, given)]


def open_requests(store: RunStore, also: set[str] | frozenset[str] = frozenset()) -> list[LabelRequest]:
    """The requests of every call that still waits for a label, and of the calls
    (batch ids) in ``also``, labelled ones included: so a page can count "k of n",
    show "n of n" once a call is done, and undo the last label of that call."""
    reqs = requests(store)
    given = labels(store)
    shown = {r.batch for r in reqs if not is_labelled(r, given)} | set(also)
    return [r for r in reqs if r.batch in shown]


# --- the labeller ----------------------------------------------------------------------


class Labeller(ABC):
    """Gives labels to items, writing each one to the run store as it is given."""

    name: str = "labeller"

    def label(self, store: RunStore, items: list[LabelItem], choices: list[str] | None = None) -> dict[str, str]:
        """Id -> label for every item labelled (now or before); items left out had none.

        Items already labelled in the store are returned without asking again."""
        choices = check_choices(choices)
        items = list(items)
        seen: set[str] = set()
        for i in items:
            if i.id in seen:
                raise ConfigError(f"labelling: item id {i.id!r} appears twice")
            seen.add(i.id)
        done = labels(store)
        todo = [i for i in items if done.get(i.id) not in choices]
        if todo:
            write_requests(store, items, choices)
            self._label(store, todo, choices, already=len(items) - len(todo))
            done = labels(store)
        return {i.id: done[i.id] for i in items if done.get(i.id) in choices}

    @abstractmethod
    def _label(self, store: RunStore, items: list[LabelItem], choices: list[str], already: int) -> None:
        """Label what it can of ``items`` (none labelled yet), each with ``give_label``
        the moment it is known. ``already``: items of the same call labelled before."""
