"""Pinned inputs: what a run read, by sha256, so that a resume notices a change.

The loaders that methods already call report each input they read: dataset files
and catalogue datasets (``data/loaders.py``), model weights (``resolve_weights``)
and judge data (labelled files, phrase lists, classifier judges), through
``note_file`` and ``note_value``. While a run's pre-flight and method run, its
``InputLedger`` is active and records every input in the store meta (``inputs``);
outside a run these calls do nothing and hash nothing. Files inside the run
directory are the run's own outputs and are not pinned.

On resume the ledger starts from the recorded pins. File and folder inputs (the
config snapshot among them) are checked before anything runs, hashing again only
files whose size or mtime moved (``hashing.py``); catalogue and hub datasets are
checked when they are read. A difference refuses the resume with one line naming
the input, unless ``allow_changed``: then each change is kept in the meta
(``inputs_changed``) and the log, and the new digest is pinned.

The active ledger is held in a context variable: worker threads started without
copying the context do not report (loaders run on the method's own thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from failforge.errors import ConfigError
from failforge.run.hashing import Digest, digest, stamp

MISSING = "missing"


class InputChanged(ConfigError):
    """An input of a resumed run is not what the run read before."""


class Pin(BaseModel):
    #: config | data file | dataset | weights | judge data | judge weights
    kind: str
    #: an absolute path, or a dataset name
    ref: str
    sha256: str
    #: size and mtime for files and folders (checked up front on resume); None for names
    stamp: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind} {self.ref}"


class MetaStore(Protocol):
    def meta(self) -> dict[str, Any]: ...
    def set_meta(self, **values: Any) -> None: ...


_ACTIVE: ContextVar["InputLedger | None"] = ContextVar("failforge_input_ledger", default=None)


def note_file(kind: str, path: str | Path, sha256: str | None = None) -> None:
    """Report a file or folder a run reads (``sha256`` when the caller already has it)."""
    ledger = _ACTIVE.get()
    if ledger is not None:
        ledger.file(kind, path, sha256)


def note_value(kind: str, name: str, sha256: str | Callable[[], str]) -> None:
    """Report a named input (a catalogue or hub dataset); ``sha256`` may be computed lazily."""
    ledger = _ACTIVE.get()
    if ledger is not None:
        ledger.value(kind, name, sha256() if callable(sha256) else sha256)


class InputLedger:
    def __init__(self, recorded: Mapping[str, Any] | None = None, allow_changed: bool = False, exclude: Path | None = None):
        self.pins: dict[str, Pin] = {k: Pin.model_validate(v) for k, v in (recorded or {}).items()}
        self.allow_changed = allow_changed
        self.exclude = Path(exclude).resolve() if exclude is not None else None
        #: changes accepted with ``allow_changed``, not yet written to the store
        self.changes: list[dict[str, Any]] = []
        self._store: MetaStore | None = None
        self._log: Callable[[str], None] | None = None
        self._lock = threading.RLock()

    # --- reporting ------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator["InputLedger"]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def file(self, kind: str, path: str | Path, sha256: str | None = None) -> None:
        p = Path(path).expanduser().resolve()
        if not p.exists() or (self.exclude is not None and p.is_relative_to(self.exclude)):
            return  # a missing input fails where it is read; the run's own files are outputs
        self.pin_file(kind, p, sha256)

    def pin_file(self, kind: str, path: Path, sha256: str | None = None) -> None:
        """Pin a file or folder, the run's own ones included (the config snapshot)."""
        with self._lock:
            key = f"{kind} {path}"
            old = self.pins.get(key)
            known = Digest(old.sha256, old.stamp) if old is not None and old.stamp else None
            d = _digest(path, known, sha256)
            self._update([Pin(kind=kind, ref=str(path), sha256=d.sha256, stamp=d.stamp)])

    def value(self, kind: str, name: str, sha256: str) -> None:
        with self._lock:
            self._update([Pin(kind=kind, ref=name, sha256=sha256)])

    def recheck(self) -> None:
        """Hash every recorded file and folder input again (only where its stamp moved)."""
        with self._lock:
            fresh = []
            for pin in self.pins.values():
                if pin.stamp is None:
                    continue
                d = _digest(Path(pin.ref), Digest(pin.sha256, pin.stamp))
                fresh.append(pin.model_copy(update={"sha256": d.sha256, "stamp": d.stamp}))
            self._update(fresh)

    # --- recording ------------------------------------------------------------------
    def attach(self, store: MetaStore, log: Callable[[str], None]) -> None:
        """From now on, write pins and accepted changes to ``store`` and ``log``."""
        with self._lock:
            self._store, self._log = store, log
            for change in self.changes:
                log(_change_line(change))
            self._persist()

    def _update(self, pins: list[Pin]) -> None:
        changed = [(self.pins[p.key], p) for p in pins if p.key in self.pins and self.pins[p.key].sha256 != p.sha256]
        if changed and not self.allow_changed:
            old, new = changed[0]
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise InputChanged(
                f"input changed since the run started: {old.kind} {old.ref} "
                f"(sha256 {_short(old.sha256)} then, {_short(new.sha256)} now){more}; "
                "resume with --allow-changed to continue with it"
            )
        now = time.time()
        new_changes = [{"input": old.key, "was": old.sha256, "now": new.sha256, "at": now} for old, new in changed]
        before = {k: p.model_copy() for k, p in self.pins.items()}
        for p in pins:
            self.pins[p.key] = p
        self.changes.extend(new_changes)
        if self._log is not None:
            for change in new_changes:
                self._log(_change_line(change))
        if self._store is not None and (new_changes or before != self.pins):
            self._persist()

    def _persist(self) -> None:
        assert self._store is not None
        values: dict[str, Any] = {"inputs": {k: p.model_dump() for k, p in sorted(self.pins.items())}}
        if self.changes:
            values["inputs_changed"] = list(self._store.meta().get("inputs_changed") or []) + self.changes
            self.changes = []
        self._store.set_meta(**values)


def _digest(path: Path, known: Digest | None, sha256: str | None = None) -> Digest:
    if not path.exists():
        return Digest(MISSING, MISSING)
    if sha256 is not None:
        return Digest(sha256, stamp(path))
    return digest(path, known)


def _short(sha: str) -> str:
    return sha if sha == MISSING else sha[:12]


def _change_line(change: dict[str, Any]) -> str:
    return (
        f"resumed with a changed input (--allow-changed): {change['input']}: "
        f"sha256 {_short(change['was'])} then, {_short(change['now'])} now"
    )
