"""The driver at scale, simulated: 10^6 model calls through the run cache against an
instant fake backend.

What it measures, at each checkpoint (10^4, 10^5, 10^6 rows by default):

- **driver overhead per call**: wall time of ``CachedModel.generate`` minus the time
  spent inside the backend, per call, over the calls since the previous checkpoint
  (cache keys, look-ups, commits, bookkeeping). Flat means it does not grow with the
  store.
- **store size**: ``store.sqlite`` plus its WAL, bytes per row, and the size of the
  call-key index alone (SQLite's ``dbstat``).
- **resume**: a second ``RunStore`` opened on the same file as ``failforge resume``
  opens it (migration check, token count), then the time until the first
  ``generate`` of ``--per-call`` requests comes back from the cache (what a resume
  waits before it goes on), and the look-up cost per call over ``--sample`` requests
  drawn at random from everything stored.

Each ``generate`` hands over ``--per-call`` requests (a method's stage); the fake
backend answers a chunk of ``--chunk`` requests at a time (``preferred_chunk``) or,
with ``--async``, one request per call behind the run cache's window of
``--window`` requests in flight (the path of server clients and replica pools).

    .venv/bin/python bench/driver_scale.py                       # 10^6 calls, ~2-3 minutes here
    .venv/bin/python bench/driver_scale.py --calls 100000 --checkpoints 10000,100000
    .venv/bin/python bench/driver_scale.py --async --calls 100000 --checkpoints 10000,100000

``--store-only`` measures the commit path alone, without the driver: rows of the same
shape (a 120-character prompt's request, a 400-character answer) inserted straight into
a ``calls`` table in groups of ``--group`` (about what the group commit gathers from the
instant backend), each group one ``synchronous=FULL`` transaction, with the store's
settings or others (``--layout``: the calls table of schema version 1, 2 or 3;
``--cache-kb``, ``--wal-pages``, ``--unsorted``, ``--page-size``): time in the inserts
and in the commits, and bytes written per row (``/proc/self/io``), at each checkpoint.

    .venv/bin/python bench/driver_scale.py --store-only                # this failforge's layout and settings
    .venv/bin/python bench/driver_scale.py --store-only --layout 2     # the key index of schema version 2
    .venv/bin/python bench/driver_scale.py --store-only --layout 1 --cache-kb 65536 --wal-pages 1000 --unsorted

``--migration`` times the one-time cost of an older store: a schema version 2 store of
each checkpoint's size, opened by this failforge's writer (which migrates it), then the
first look-up of 1,000 calls (which builds the in-memory call index).

    .venv/bin/python bench/driver_scale.py --migration
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from failforge.models.base import ChatModel, Completion, Request, SamplingParams, as_conversation, fingerprint_of

TOPICS = ["the ocean", "volcanoes", "honey bees", "the moon", "chess", "bread baking", "rainforests", "trains"]
PARAMS = SamplingParams(max_tokens=256, temperature=0.7, top_p=0.95, seed=1234)


def prompt(i: int) -> str:
    # about 120 characters, unique per i, like a generated instruction
    return f"Question {i}: write a short, factual paragraph about {TOPICS[i % len(TOPICS)]} for a curious twelve-year-old reader."


class InstantModel(ChatModel):
    """Answers at once with a 400-character text; counts the time spent inside."""

    backend = "fake"
    name = "instant"

    def __init__(self, chunk: int = 16, window: int = 64):
        self.preferred_chunk = chunk
        self.max_in_flight = window
        self.inside_s = 0.0
        self._body = "x" * 380

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(backend=self.backend, name=self.name)

    def _complete(self, requests: list[Request]) -> list[Completion]:
        t0 = time.perf_counter()
        out = [
            Completion(text=f"answer {r.seed}: {self._body}", prompt_tokens=32, completion_tokens=96, sample_index=r.sample_index)
            for r in requests
        ]
        self.inside_s += time.perf_counter() - t0
        return out


class InstantAsyncModel(InstantModel):
    """The same, natively async: one request per call, answered without waiting."""

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        return self._complete(requests)


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def key_index_bytes(store) -> int:
    """On disk, what finds a call by its key, in bytes: the calls table's primary-key
    index (schema versions 1 and 2), or the narrow ``call_keys`` table an opening
    writer reads to build its in-memory index (version 3 on)."""
    with store._lock:
        row = store._conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='calls' AND name LIKE 'sqlite_autoindex_%'"
        ).fetchone()
        name = row[0] if row else "call_keys"
        return store._conn.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name=?", (name,)).fetchone()[0]


def store_only(args, checkpoints: list[int]) -> int:
    """The commit path alone: groups of rows inserted and committed as ``put_calls`` does."""
    from failforge.run.store import WAL_CHECKPOINT_PAGES, WRITER_CACHE_KB

    cache_kb = args.cache_kb or WRITER_CACHE_KB
    wal_pages = args.wal_pages or WAL_CHECKPOINT_PAGES
    tmp = tempfile.TemporaryDirectory(prefix="failforge-store-", dir=args.dir)
    path = Path(tmp.name) / "store.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={args.page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA cache_size=-{cache_kb}")
    conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
    columns = (
        " fingerprint TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL, text TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,"
        " finish_reason TEXT, logprobs TEXT, created_at REAL NOT NULL"
    )
    appends = args.layout == 3
    if appends:  # schema version 3: no key index; the keys' narrow copy beside
        conn.execute(f"CREATE TABLE calls (id INTEGER PRIMARY KEY, key BLOB NOT NULL, {columns})")
        conn.execute("CREATE TABLE call_keys (id INTEGER PRIMARY KEY, key BLOB NOT NULL, tokens INTEGER NOT NULL)")
    else:  # versions 1 and 2: the key is the primary key
        conn.execute(f"CREATE TABLE calls (key {'TEXT' if args.layout == 1 else 'BLOB'} PRIMARY KEY, {columns})")
    request = Request(messages=tuple(as_conversation(prompt(123456))), params=PARAMS).model_dump_json()
    text = "answer 1234: " + "x" * 380

    def io() -> dict[str, int]:
        with open("/proc/self/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}

    print(
        f"store only: schema version {args.layout} ("
        + {1: "hex keys, key index", 2: "32-byte keys, key index", 3: "32-byte keys, no key index"}[args.layout]
        + f"), groups of {args.group}{' in key order' if args.layout == 2 and not args.unsorted else ''}, "
        f"cache {cache_kb} KiB, WAL {wal_pages} pages, "
        f"page {args.page_size} B"
    )
    print(f"{'rows':>9} | {'insert us/row':>13} | {'commit us/row':>13} | {'written B/row':>13} | {'store MB':>8}")
    done = 0
    for target in checkpoints:
        t_insert = t_commit = 0.0
        io0, start = io(), done
        while done < target:
            n = min(args.group, target - done)
            rows = []
            for i in range(done, done + n):
                h = hashlib.sha256(str(i).encode())
                key = h.hexdigest() if args.layout == 1 else h.digest()
                rows.append((key, "fp", "m", request, text, 32, 96, 0.0, "stop", None, time.time()))
            if args.layout == 2 and not args.unsorted:
                rows.sort(key=lambda r: r[0])
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            if appends:
                conn.executemany("INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [(done + j + 1, *r) for j, r in enumerate(rows)])
                conn.executemany("INSERT INTO call_keys VALUES (?,?,?)", [(done + j + 1, r[0], 128) for j, r in enumerate(rows)])
            else:
                conn.executemany("INSERT OR IGNORE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            t1 = time.perf_counter()
            conn.execute("COMMIT")
            t_insert += t1 - t0
            t_commit += time.perf_counter() - t1
            done += n
        n, io1 = done - start, io()
        print(f"{done:>9,} | {t_insert / n * 1e6:>13.1f} | {t_commit / n * 1e6:>13.1f} | "
              f"{(io1['write_bytes'] - io0['write_bytes']) / n:>13.0f} | {store_bytes(path) / 1e6:>8.1f}", flush=True)  # fmt: skip
    conn.close()
    tmp.cleanup()
    return 0


def migration(args, checkpoints: list[int]) -> int:
    """The one-time cost of opening an older store: a schema version 2 store of each
    checkpoint's size (written straight with SQL), opened by this failforge's writer,
    which migrates it; then the first look-up, which builds the in-memory call index."""
    from failforge.run.store import MIGRATIONS, RunStore, _split_sql

    request = Request(messages=tuple(as_conversation(prompt(123456))), params=PARAMS).model_dump_json()
    text = "answer 1234: " + "x" * 380
    print(f"migration: a schema version 2 store opened by a writer of version {len(MIGRATIONS)}")
    print(f"{'rows':>9} | {'store MB':>8} | {'migrate s':>9} | {'MB after':>8} | {'first look-up s':>15} | {'found':>5}")
    for target in checkpoints:
        with tempfile.TemporaryDirectory(prefix="failforge-migrate-", dir=args.dir) as tmp:
            path = Path(tmp) / "store.sqlite"
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.create_function("failforge_unhex", 1, bytes.fromhex)  # migration 2 (on an empty table)
            conn.execute("BEGIN")
            for sql in MIGRATIONS[:2]:
                for stmt in _split_sql(sql):
                    conn.execute(stmt)
            conn.execute("PRAGMA user_version=2")
            keys = [hashlib.sha256(str(i).encode()).digest() for i in range(target)]
            conn.executemany(
                "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ((k, "fp", "m", request, text, 32, 96, 0.0, "stop", None, 1.0) for k in keys),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            before = store_bytes(path)
            t0 = time.perf_counter()
            store = RunStore(path)
            migrate_s = time.perf_counter() - t0
            wanted = [keys[i].hex() for i in random.Random(target).sample(range(target), min(1000, target))]
            t0 = time.perf_counter()
            found = store.get_calls(wanted)
            first_s = time.perf_counter() - t0
            store.close()
            print(f"{target:>9,} | {before / 1e6:>8.1f} | {migrate_s:>9.2f} | {store_bytes(path) / 1e6:>8.1f} | "
                  f"{first_s:>15.3f} | {len(found):>5}", flush=True)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--checkpoints", default="10000,100000,1000000", help="row counts to report at (comma-separated)")
    ap.add_argument("--per-call", type=int, default=1000, help="requests per generate call")
    ap.add_argument("--chunk", type=int, default=16, help="the fake backend's batch (preferred_chunk)")
    ap.add_argument("--async", dest="use_async", action="store_true", help="a natively async backend behind the window")
    ap.add_argument("--window", type=int, default=64, help="--async: requests in flight")
    ap.add_argument("--sample", type=int, default=10000, help="requests looked up at random per resume measure")
    ap.add_argument("--dir", default=None, help="where the store goes (default: a temporary folder)")
    ap.add_argument("--store-only", action="store_true", help="the commit path alone (see above)")
    ap.add_argument("--migration", action="store_true", help="the time to migrate a version 2 store of each checkpoint's size")
    ap.add_argument("--group", type=int, default=520, help="--store-only: rows per commit")
    ap.add_argument("--layout", type=int, choices=(1, 2, 3), default=3,
                    help="--store-only: the calls table of this schema version (1: hex-digit key index, 2: 32-byte key index, 3: no key index)")
    ap.add_argument("--cache-kb", type=int, default=0, help="--store-only: page cache, KiB (default: the store's)")
    ap.add_argument("--wal-pages", type=int, default=0, help="--store-only: wal_autocheckpoint (default: the store's)")
    ap.add_argument("--unsorted", action="store_true", help="--store-only, --layout 2: rows in arrival order, not key order")
    ap.add_argument("--page-size", type=int, default=4096, help="--store-only: SQLite page size")
    args = ap.parse_args(argv)
    try:
        checkpoints = sorted({int(float(x)) for x in args.checkpoints.split(",") if x.strip()})
    except ValueError:
        print(f"error: --checkpoints {args.checkpoints!r}: expected numbers separated by commas", file=sys.stderr)
        return 2
    if args.calls < 1 or args.per_call < 1 or not checkpoints or checkpoints[-1] > args.calls or checkpoints[0] < 1:
        print("error: --calls, --per-call and every checkpoint must be positive, checkpoints at most --calls", file=sys.stderr)
        return 2
    if args.store_only:
        return store_only(args, checkpoints)
    if args.migration:
        return migration(args, checkpoints)

    from failforge.run.cached import CachedModel
    from failforge.run.store import RunStore

    tmp = tempfile.TemporaryDirectory(prefix="failforge-driver-", dir=args.dir)
    path = Path(tmp.name) / "store.sqlite"
    inner = (InstantAsyncModel if args.use_async else InstantModel)(chunk=args.chunk, window=args.window)
    store = RunStore(path)
    model = CachedModel(inner, store)
    print(
        f"{args.calls:,} calls, {args.per_call} per generate, "
        + (f"async backend, window {args.window}" if args.use_async else f"backend chunk {args.chunk}")
        + f", store in {path.parent}"
    )
    print(f"{'rows':>9} | {'driver us/call':>14} | {'of which backend':>16} | {'store MB':>8} | {'B/row':>6} | "
          f"{'key index MB':>12} | {'resume open s':>13} | {'first 1000 s':>12} | {'look-up us/call':>15}")  # fmt: skip

    done = 0
    seg_wall = seg_inside = 0.0
    seg_calls = 0
    for target in checkpoints:
        while done < target:
            n = min(args.per_call, target - done)
            convs = [as_conversation(prompt(i)) for i in range(done, done + n)]
            before = inner.inside_s
            t0 = time.perf_counter()
            model.generate(convs, PARAMS)
            seg_wall += time.perf_counter() - t0
            seg_inside += inner.inside_s - before
            seg_calls += n
            done += n
        assert model.sent == done, (model.sent, done)
        per_call = (seg_wall - seg_inside) / seg_calls * 1e6
        inside = seg_inside / seg_calls * 1e6
        size = store_bytes(path)
        index = key_index_bytes(store)

        # resume: a second writer-mode store on the same file, as `failforge resume` opens it
        t0 = time.perf_counter()
        again = RunStore(path)
        again.tokens_spent()
        open_s = time.perf_counter() - t0
        fresh = (InstantAsyncModel if args.use_async else InstantModel)(chunk=args.chunk, window=args.window)
        resumed = CachedModel(fresh, again)
        t0 = time.perf_counter()
        resumed.generate([as_conversation(prompt(i)) for i in range(min(args.per_call, done))], PARAMS)
        first_s = time.perf_counter() - t0
        ids = random.Random(done).sample(range(done), min(args.sample, done))
        convs = [as_conversation(prompt(i)) for i in ids]
        t0 = time.perf_counter()
        resumed.generate(convs, PARAMS)
        lookup = (time.perf_counter() - t0) / len(ids) * 1e6
        assert resumed.sent == 0, "a resume must answer everything from the store"
        again.close()

        print(f"{done:>9,} | {per_call:>14.1f} | {inside:>16.1f} | {size / 1e6:>8.1f} | {size / done:>6.0f} | "
              f"{index / 1e6:>12.1f} | {open_s:>13.3f} | {first_s:>12.3f} | {lookup:>15.1f}", flush=True)  # fmt: skip
        seg_wall = seg_inside = 0.0
        seg_calls = 0

    model.close()
    store.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
