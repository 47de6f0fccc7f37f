"""Where each stored call is: a call key (the 32 bytes of its SHA-256) → its rowid in
the store's ``calls`` table, held in memory by the one process that writes the store.

Why not SQLite's own index: call keys are hashes, so each new call lands on a random
page of a B-tree on them. Past about 10^5 calls a commit of a few hundred calls
rewrites one 4 KiB index page per call, in the WAL and again at checkpoint, and the
driver's cost per call grows with the store (docs/throughput.md, "The driver at 10^6
calls"). Kept here, the table only ever appends, and a look-up costs the same at any
size. No library offers a compact, exact bytes→int map with batch look-ups, so this
one is written by hand: a sorted numpy array of keys (40 bytes a call) for everything
up to the last merge, and a dict for the calls stored since.

The store keeps it exact against other connections by reading the rows stored after
the last one it knows (``RunStore._call_index``), so two writers in turn never store a
key twice.
"""

from __future__ import annotations

import numpy as np

#: bytes of a call key
KEY_BYTES = 32

#: calls kept in the dict before they are merged into the sorted arrays: at least this
#: many, or an eighth of the merged ones (a merge copies the arrays once)
MERGE_AFTER = 65536


class CallIndex:
    """An exact map of call key (32 bytes) → rowid, for batch look-ups."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=f"S{KEY_BYTES}")  # sorted
        self._rows = np.empty(0, dtype=np.int64)
        self._recent: dict[bytes, int] = {}
        #: the highest rowid added (the store reads only rows after it to catch up)
        self.last_row = 0

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def add(self, pairs: list[tuple[int, bytes]]) -> None:
        """Add (rowid, key) pairs; a key already present keeps its first rowid."""
        for _, key in pairs:
            if len(key) != KEY_BYTES:
                raise ValueError(f"a call key is {KEY_BYTES} bytes, got {len(key)}")
        known = self.find([key for _, key in pairs])
        for (row, key), at in zip(pairs, known):
            if at is None:
                self._recent.setdefault(key, row)
            self.last_row = max(self.last_row, row)
        if len(self._recent) >= max(MERGE_AFTER, len(self._keys) // 8):
            self._merge()

    def find(self, keys: list[bytes]) -> list[int | None]:
        """The rowid of each key, or None where it is not stored."""
        out: list[int | None] = [self._recent.get(k) for k in keys]
        rest = [i for i, r in enumerate(out) if r is None]
        if rest and len(self._keys):
            wanted = np.array([keys[i] for i in rest], dtype=self._keys.dtype)
            at = np.minimum(np.searchsorted(self._keys, wanted), len(self._keys) - 1)
            hit = self._keys[at] == wanted
            for i, pos, h in zip(rest, at.tolist(), hit.tolist()):
                if h:
                    out[i] = int(self._rows[pos])
        return out

    def _merge(self) -> None:
        if not self._recent:
            return
        # A key never ends in the dict and the arrays both, so this is a plain merge of
        # two sorted runs (numpy's insert is one copy of the arrays).
        new_keys = np.array(list(self._recent), dtype=self._keys.dtype)
        new_rows = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_rows = new_keys[order], new_rows[order]
        at = np.searchsorted(self._keys, new_keys)
        self._keys = np.insert(self._keys, at, new_keys)
        self._rows = np.insert(self._rows, at, new_rows)
        self._recent = {}

    @classmethod
    def from_table(cls, rows: np.ndarray, keys: bytes) -> CallIndex:
        """Built at once from every stored call: ``rows`` (int64) and their keys joined
        in the same order (``len(rows) * 32`` bytes)."""
        index = cls()
        if not len(rows):
            return index
        ks = np.frombuffer(keys, dtype=f"S{KEY_BYTES}")
        if len(ks) != len(rows):
            raise ValueError(f"{len(rows)} rowids but {len(ks)} keys")
        order = np.argsort(ks, kind="stable")
        ks, rs = ks[order], rows[order]
        # a key stored twice (never by failforge, which checks first) keeps its first row
        first = np.ones(len(ks), dtype=bool)
        first[1:] = ks[1:] != ks[:-1]
        index._keys, index._rows = ks[first].copy(), rs[first].copy()
        index.last_row = int(rows.max())
        return index
