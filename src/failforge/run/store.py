"""The run store: one SQLite file per run directory.

It holds every model call (the cache, keyed by ``Request.key`` and found through an
index kept in memory, ``run/call_index.py``), every record the run produces, every
iteration's metrics, training steps, and run metadata. WAL mode
and one transaction per write batch mean a ``kill -9`` loses at most the calls in
flight: everything committed is read back on resume.

On power loss or an OS crash: model calls (what costs money and time to redo) are
committed with ``synchronous=FULL``, so the WAL is on disk when ``put_calls`` returns
and every call stored survives, with every transaction committed before it. Other
writes (records, metrics, meta, training steps) use ``synchronous=NORMAL``: one
committed after the last call may be rolled back, and the database stays consistent;
a resume rebuilds records from the cached calls. docs/reliability.md has the cost.

A call the server refused (``Completion.error``) is stored like an answer, with an
empty text and ``finish_reason`` ``"error: <the error>"``, so a resume does not send
it again and the item stays recorded as an error.

Metrics are keyed by iteration (1, 2, ...); iteration 0 holds run-level results
(a one-shot job's totals, ReverseGen's held-out evaluation and re-attack).

Schema changes go through ``MIGRATIONS`` (ordered, applied once, tracked by
``PRAGMA user_version``), so an old run directory opens with a newer failforge.
Only a writer migrates. ``RunStore(path, readonly=True)`` (what ``report``, ``runs``
and ``export`` use) opens the file with SQLite's ``mode=ro``, never migrates, reads
every schema from ``READABLE_FROM`` on as it is (call keys as hex text before version
2, as 32 bytes since; an index on them before version 3, ``call_keys`` since), and
refuses an older one with one line: resuming the run with this version upgrades it. A
writer refuses a store written by a newer failforge rather than write rows that
version does not expect.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from failforge.errors import ConfigError
from failforge.models.base import Completion, Request
from failforge.run.call_index import CallIndex

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE calls (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        text TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        finish_reason TEXT,
        logprobs TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        iteration INTEGER,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE(kind, key)
    );
    CREATE INDEX records_kind_iter ON records(kind, iteration);
    CREATE TABLE metrics (
        iteration INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        data TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (iteration, name)
    );
    CREATE TABLE train_steps (
        model_version TEXT NOT NULL,
        step INTEGER NOT NULL,
        loss REAL,
        seconds REAL,
        data TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (model_version, step)
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: a call's key is the 32 bytes of its SHA-256, not its 64 hex digits: the key
    # index is half the size (bench/driver_scale.py). Rows keep their rowid (the order
    # they were stored in).
    """
    CREATE TABLE calls_v2 (
        key BLOB PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        text TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        finish_reason TEXT,
        logprobs TEXT,
        created_at REAL NOT NULL
    );
    INSERT INTO calls_v2 (rowid, key, fingerprint, model, request, text, prompt_tokens, completion_tokens,
                          latency_s, finish_reason, logprobs, created_at)
        SELECT rowid, failforge_unhex(key), fingerprint, model, request, text, prompt_tokens, completion_tokens,
               latency_s, finish_reason, logprobs, created_at
        FROM calls ORDER BY rowid;
    DROP TABLE calls;
    ALTER TABLE calls_v2 RENAME TO calls;
    """,
    # 3: calls are found through an index their writer keeps in memory
    # (run/call_index.py), not through a B-tree on their hashed keys, which rewrote one
    # random page per new call: the table only appends, at a cost per call that does not
    # grow with the store (docs/throughput.md). ``call_keys`` holds each call's key and
    # tokens by its id: a narrow copy a writer reads (50 MB at 10^6 calls) to build that
    # index and to count the tokens spent, where the calls table is 900 MB.
    # Ids are explicit so that a VACUUM keeps them. A call deleted by hand leaves
    # ``call_keys`` with it.
    """
    CREATE TABLE calls_v3 (
        id INTEGER PRIMARY KEY,
        key BLOB NOT NULL,
        fingerprint TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        text TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        finish_reason TEXT,
        logprobs TEXT,
        created_at REAL NOT NULL
    );
    INSERT INTO calls_v3 (id, key, fingerprint, model, request, text, prompt_tokens, completion_tokens,
                          latency_s, finish_reason, logprobs, created_at)
        SELECT rowid, key, fingerprint, model, request, text, prompt_tokens, completion_tokens,
               latency_s, finish_reason, logprobs, created_at
        FROM calls ORDER BY rowid;
    DROP TABLE calls;
    ALTER TABLE calls_v3 RENAME TO calls;
    CREATE TABLE call_keys (
        id INTEGER PRIMARY KEY,
        key BLOB NOT NULL,
        tokens INTEGER NOT NULL
    );
    INSERT INTO call_keys (id, key, tokens) SELECT id, key, prompt_tokens + completion_tokens FROM calls ORDER BY id;
    CREATE TRIGGER calls_forget AFTER DELETE ON calls BEGIN DELETE FROM call_keys WHERE id = old.id; END
    """,
]

#: the oldest schema version a reader reads as it is (versions 1 to 3 differ only in how
#: calls are found by key, which ``get_calls`` handles)
READABLE_FROM = 1

#: the first schema version that stores call keys as 32 bytes
BLOB_KEYS_FROM = 2

#: the first schema version whose calls are found through ``CallIndex`` (no key index)
CALL_INDEX_FROM = 3


#: page cache of a writer, KiB (SQLite allocates it as pages are used). Since schema
#: version 3 calls only append, so a run fills little of it; a migration's copy of the
#: calls table uses more. With the WAL below, commits took 9.4 µs a call at 10^6 calls
#: against 12.0 with SQLite's defaults (2 MB, 1000 pages): ``bench/driver_scale.py
#: --store-only``, docs/throughput.md
WRITER_CACHE_KB = 262144

#: WAL pages (4 KiB) a writer's commit may leave before it checkpoints them into the
#: database file (SQLite's default is 1000): fewer checkpoints, fewer flushes of the file
WAL_CHECKPOINT_PAGES = 10000

#: how a refused call's error is kept in the ``finish_reason`` column
ERROR_PREFIX = "error: "


class StoreOutdated(ConfigError):
    """A reader met a store whose schema this failforge would migrate."""


class RunStore:
    """Thread-safe access to one run's SQLite store."""

    #: ``PRAGMA synchronous`` for commits of model calls; every other commit is NORMAL
    calls_synchronous = "FULL"

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        #: prompt + completion tokens of every stored call (read once, then kept up to date)
        self._spent: int | None = None
        #: where each stored call is (schema version 3 on), built at first use
        self._index: CallIndex | None = None
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute("PRAGMA query_only=ON")
            self._check_readable()
            self._blob_keys = self.schema_version >= BLOB_KEYS_FROM
            self._uses_index = self.schema_version >= CALL_INDEX_FROM
            return
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._check_not_newer()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KB}")
        self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        # migration 2 turns stored hex keys into bytes; SQLite's own unhex() is newer (3.41)
        # than some Pythons' SQLite
        self._conn.create_function("failforge_unhex", 1, bytes.fromhex, deterministic=True)
        self._migrate()
        self._blob_keys = self._uses_index = True

    # --- schema ------------------------------------------------------------
    def _check_readable(self) -> None:
        version = self.schema_version
        if version < READABLE_FROM:
            self._conn.close()
            raise StoreOutdated(
                f"{self.path}: the run store has schema version {version}, this failforge reads version "
                f"{READABLE_FROM} or later; `failforge resume` with this version upgrades it (report, runs and export never write to a run)"
            )

    def _check_not_newer(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            self._conn.close()
            raise ConfigError(
                f"{self.path}: the run store has schema version {version}, newer than this failforge's "
                f"{len(MIGRATIONS)}; use the failforge that wrote it"
            )

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                with self.transaction() as c:
                    for stmt in _split_sql(sql):
                        c.execute(stmt)
                    c.execute(f"PRAGMA user_version={i}")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self, synchronous: str = "NORMAL") -> Iterator[sqlite3.Connection]:
        """One write transaction; ``synchronous`` applies to its commit (FULL: the WAL
        is flushed to disk before the commit returns)."""
        with self._lock:
            if synchronous != "NORMAL":
                self._conn.execute(f"PRAGMA synchronous={synchronous}")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                else:
                    self._conn.execute("COMMIT")
            finally:
                if synchronous != "NORMAL":
                    self._conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- calls (the cache) --------------------------------------------------
    def get_calls(self, keys: list[str]) -> dict[str, Completion]:
        """The stored answers of these keys (``Request.key``: hex digits), by key."""
        out: dict[str, Completion] = {}
        with self._lock:
            if self._uses_index:
                found = self._call_index().find([bytes.fromhex(k) for k in keys])
                by_id = {i: k for k, i in zip(keys, found) if i is not None}
                for chunk in _chunks(list(by_id), 500):
                    rows = self._conn.execute(
                        "SELECT id, text, prompt_tokens, completion_tokens, latency_s, finish_reason, logprobs"
                        f" FROM calls WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    for i, *answer in rows:
                        out[by_id[i]] = _completion(*answer)
                return out
            # schema versions 1 and 2 (read-only): SQLite's index on the key
            for chunk in _chunks(keys, 500):
                rows = self._conn.execute(
                    "SELECT key, text, prompt_tokens, completion_tokens, latency_s, finish_reason, logprobs"
                    f" FROM calls WHERE key IN ({','.join('?' * len(chunk))})",
                    [bytes.fromhex(k) for k in chunk] if self._blob_keys else chunk,
                ).fetchall()
                for k, *answer in rows:
                    out[k.hex() if self._blob_keys else k] = _completion(*answer)
        return out

    def _call_index(self) -> CallIndex:
        """(Under the lock.) Where each stored call is: built from ``call_keys`` at first
        use, then caught up with the calls other connections stored since."""
        if self._index is None:
            ids: array = array("q")
            keys = bytearray()
            cur = self._conn.execute("SELECT id, key FROM call_keys ORDER BY id")
            while batch := cur.fetchmany(65536):
                for i, k in batch:
                    ids.append(i)
                    keys += k
            self._index = CallIndex.from_table(np.frombuffer(ids, dtype=np.int64), bytes(keys))
        else:
            new = self._conn.execute(
                "SELECT id, key FROM call_keys WHERE id > ? ORDER BY id", (self._index.last_row,)
            ).fetchall()
            if new:  # stored by another connection: count the tokens again
                self._index.add(new)
                self._spent = None
        return self._index

    def put_calls(
        self,
        fingerprint: str,
        model: str,
        items: list[tuple[str, Request, Completion]],
        events: tuple[str, dict[str, int]] | None = None,
    ) -> None:
        """Store answered calls in one transaction, flushed to disk before it returns;
        ``events`` (source, counts) are added to ``backend_events`` in the same one. A
        call whose key is stored already is left as it is."""
        now = time.time()
        rows = [
            (
                bytes.fromhex(key),
                fingerprint,
                model,
                req.model_dump_json(),
                comp.text,
                comp.prompt_tokens,
                comp.completion_tokens,
                comp.latency_s,
                ERROR_PREFIX + comp.error if comp.error is not None else comp.finish_reason,
                json.dumps(comp.logprobs) if comp.logprobs is not None else None,
                now,
            )
            for key, req, comp in items
        ]
        with self._lock:
            with self.transaction(self.calls_synchronous) as c:
                if events is not None and events[1]:
                    self._add_events(c, *events)
                index = self._call_index()  # caught up under the write lock: no key goes in twice
                next_id = max(index.last_row, c.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()[0]) + 1
                new: list[tuple] = []
                seen: set[bytes] = set()
                for row, at in zip(rows, index.find([r[0] for r in rows])):
                    if at is None and row[0] not in seen:
                        seen.add(row[0])
                        new.append((next_id + len(new), *row))
                c.executemany("INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", new)
                c.executemany("INSERT INTO call_keys VALUES (?,?,?)", [(*r[:2], r[6] + r[7]) for r in new])
            # committed: now they can be found
            index.add([r[:2] for r in new])
            if self._spent is not None:
                self._spent += sum(r[6] + r[7] for r in new)

    def tokens_spent(self) -> int:
        """Prompt + completion tokens of every call in the store (the run's token budget counts these)."""
        with self._lock:
            if self._spent is None:
                if self._uses_index:  # the narrow copy: a twentieth of the calls table to read
                    row = self._conn.execute("SELECT COALESCE(SUM(tokens), 0) FROM call_keys").fetchone()
                else:
                    row = self._conn.execute("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM calls").fetchone()
                self._spent = int(row[0])
            return self._spent

    def add_events(self, source: str, counts: dict[str, int]) -> None:
        """Add to the counts of what happened on the way to a model (meta ``backend_events``):
        HTTP attempts, retries, faults by kind, refused requests."""
        if not counts:
            return
        with self.transaction() as c:
            self._add_events(c, source, counts)

    @staticmethod
    def _add_events(c: sqlite3.Connection, source: str, counts: dict[str, int]) -> None:
        row = c.execute("SELECT value FROM meta WHERE key='backend_events'").fetchone()
        events = json.loads(row[0]) if row else {}
        mine = events.setdefault(source, {})
        for name, n in counts.items():
            mine[name] = int(mine.get(name, 0)) + int(n)
        c.execute("INSERT OR REPLACE INTO meta VALUES ('backend_events', ?)", (json.dumps(events),))

    def call_totals(self, fingerprint: str | None = None) -> dict[str, float]:
        sql = "SELECT COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0), COALESCE(SUM(latency_s),0) FROM calls"
        args: tuple = ()
        if fingerprint:
            sql += " WHERE fingerprint=?"
            args = (fingerprint,)
        with self._lock:
            n, pt, ct, lat = self._conn.execute(sql, args).fetchone()
        return {"calls": n, "prompt_tokens": pt, "completion_tokens": ct, "model_seconds": lat}

    # --- records --------------------------------------------------------------
    def put_records(self, kind: str, items: Iterable[tuple[str, dict[str, Any]]], iteration: int | None = None) -> None:
        """Insert or replace records of one kind; ``key`` makes a re-run idempotent."""
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO records(kind, key, iteration, data, created_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT(kind, key) DO UPDATE SET data=excluded.data, iteration=excluded.iteration",
                [(kind, key, iteration, json.dumps(data, ensure_ascii=False), now) for key, data in items],
            )

    def records(self, kind: str, iteration: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT key, iteration, data FROM records WHERE kind=?"
        args: list = [kind]
        if iteration is not None:
            sql += " AND iteration=?"
            args.append(iteration)
        sql += " ORDER BY id"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [{"_key": k, "_iteration": it, **json.loads(d)} for k, it, d in rows]

    def record_kinds(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall())

    # --- metrics ----------------------------------------------------------------
    def put_metrics(self, iteration: int, values: dict[str, Any]) -> None:
        now = time.time()
        rows = []
        for name, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                rows.append((iteration, name, None, json.dumps(v, default=str), now))
            else:
                rows.append((iteration, name, float(v), None, now))
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?) ON CONFLICT(iteration, name)"
                " DO UPDATE SET value=excluded.value, data=excluded.data",
                rows,
            )

    def metrics(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        with self._lock:
            rows = self._conn.execute("SELECT iteration, name, value, data FROM metrics ORDER BY iteration").fetchall()
        for it, name, value, data in rows:
            out.setdefault(it, {})[name] = value if data is None else json.loads(data)
        return out

    # --- training steps -----------------------------------------------------------
    def put_train_step(self, model_version: str, step: int, loss: float | None, seconds: float | None, **data) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO train_steps VALUES (?,?,?,?,?,?)",
                (model_version, step, loss, seconds, json.dumps(data, default=str), time.time()),
            )

    def train_steps(self, model_version: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT model_version, step, loss, seconds, data FROM train_steps"
        args: tuple = ()
        if model_version:
            sql += " WHERE model_version=?"
            args = (model_version,)
        sql += " ORDER BY created_at, step"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            {"model_version": mv, "step": s, "loss": l, "seconds": sec, **(json.loads(d) if d else {})}
            for mv, s, l, sec, d in rows
        ]

    # --- meta -----------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?,?)",
                [(k, json.dumps(v, default=str)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}


def _completion(text, prompt_tokens, completion_tokens, latency_s, finish_reason, logprobs) -> Completion:
    """A stored call's answer, as the cache hands it back."""
    error = finish_reason[len(ERROR_PREFIX) :] if finish_reason and finish_reason.startswith(ERROR_PREFIX) else None
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_s=latency_s,
        finish_reason="error" if error is not None else finish_reason,
        logprobs=json.loads(logprobs) if logprobs else None,
        cached=True,
        error=error,
    )


def _chunks(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def _split_sql(script: str) -> list[str]:
    # sqlite3.executescript would COMMIT and break the migration transaction, so the
    # statements run one by one; a trigger's body holds ';' of its own, so pieces are
    # joined until SQLite says the statement is complete.
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf.strip())
    return out
