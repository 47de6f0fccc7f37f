import sqlite3

import pytest
from fakes import EchoModel

from failforge.errors import ConfigError

from failforge.models.base import Completion, Request, SamplingParams, expand, as_conversation
from failforge.run.cached import CachedModel
from failforge.run.records import AttemptRecord, Provenance, load, put
from failforge.run.store import MIGRATIONS, RunStore, StoreOutdated


def test_key_depends_on_every_part():
    conv = as_conversation("hi")
    base = Request(messages=tuple(conv), params=SamplingParams(), sample_index=0)
    k = base.key("fp")
    assert base.key("fp2") != k
    assert Request(messages=tuple(as_conversation("hi!")), params=SamplingParams()).key("fp") != k
    assert Request(messages=tuple(conv), params=SamplingParams(temperature=1.0)).key("fp") != k
    assert Request(messages=tuple(conv), params=SamplingParams(seed=1)).key("fp") != k
    assert Request(messages=tuple(conv), params=SamplingParams(), sample_index=1).key("fp") != k
    # n only says how many samples are wanted: sample 0 is the same with n=1 or n=3
    assert Request(messages=tuple(conv), params=SamplingParams(n=3)).key("fp") == k


def test_cached_model_never_sends_a_key_twice(store):
    inner = EchoModel()
    model = CachedModel(inner, store, chunk_size=2)
    params = SamplingParams(n=2, temperature=1.0, seed=7)
    first = model.generate(["a", "b", "c"], params)
    assert len(inner.calls) == 6 and model.sent == 6
    again = model.generate(["a", "b", "c", "d"], params)
    assert len(inner.calls) == 8  # only "d"'s two samples were new
    assert [c.text for c in again[0]] == [c.text for c in first[0]]
    assert all(c.cached for c in again[0]) and not any(c.cached for c in again[3])
    # the samples of one conversation differ (their seeds differ)
    assert first[0][0].text != first[0][1].text


def test_duplicate_requests_in_one_batch_are_sent_once(store):
    inner = EchoModel()
    model = CachedModel(inner, store)
    model.generate(["same", "same", "other"])
    assert len(inner.calls) == 2


def test_changed_fingerprint_misses_the_cache(store):
    CachedModel(EchoModel(version="1"), store).generate(["a"])
    inner2 = EchoModel(version="2")
    CachedModel(inner2, store).generate(["a"])
    assert len(inner2.calls) == 1


def test_async_path_commits_and_reuses(store):
    import asyncio

    inner = EchoModel()
    model = CachedModel(inner, store, chunk_size=1)
    out = asyncio.run(model.agenerate(["x", "y"]))
    assert [o[0].text for o in out] == [o[0].text for o in model.generate(["x", "y"])]
    assert len(inner.calls) == 2


def test_store_survives_reopen_and_counts(tmp_path):
    path = tmp_path / "s.sqlite"
    s = RunStore(path)
    CachedModel(EchoModel(), s).generate(["one", "two"])
    s.put_metrics(1, {"failure_rate": 0.25, "examples": ["x"]})
    s.set_meta(status="running")
    s.close()
    s = RunStore(path)
    assert s.call_totals()["calls"] == 2
    assert s.metrics()[1] == {"failure_rate": 0.25, "examples": ["x"]}
    assert s.meta()["status"] == "running"
    assert s.schema_version == len(MIGRATIONS)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_records_roundtrip_and_upsert(store):
    prov = Provenance(method="reversegen", task="math", iteration=1, seeds=["s1"])
    r = AttemptRecord(id="a1", instruction="What is 2+2?", responses=["5"], label="fail", reason="5 != 4", provenance=prov)
    put(store, [r], iteration=1)
    put(store, [r.model_copy(update={"reason": "changed"})], iteration=1)
    rows = load(store, "attempt", iteration=1)
    assert len(rows) == 1 and rows[0].reason == "changed" and rows[0].failed
    assert store.record_kinds() == {"attempt": 1}


def test_failed_transaction_writes_nothing(store):
    try:
        with store.transaction() as c:
            c.execute("INSERT INTO meta VALUES ('k', '1')")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert store.meta() == {}


def test_expand_is_conversation_major():
    reqs = expand([as_conversation("a"), as_conversation("b")], SamplingParams(n=2))
    assert [(r.messages[0].content, r.sample_index) for r in reqs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [r.seed for r in reqs] == [0, 1, 0, 1]


def test_sync_generate_overlaps_requests_of_an_async_backend(store):
    import asyncio

    class SlowAsync(EchoModel):
        preferred_chunk = 1
        in_flight = peak = 0

        async def _acomplete(self, requests):
            SlowAsync.in_flight += 1
            SlowAsync.peak = max(SlowAsync.peak, SlowAsync.in_flight)
            await asyncio.sleep(0.05)
            SlowAsync.in_flight -= 1
            return self._complete(requests)

    model = CachedModel(SlowAsync(), store)
    out = model.generate(["a", "b", "c", "d"])
    assert len(out) == 4 and SlowAsync.peak == 4


# --- readers never write -------------------------------------------------------------
def _old_store(path) -> None:
    """A store from before the first migration: a SQLite file at schema version 0."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("""INSERT INTO meta VALUES ('status', '"finished"')""")
    conn.commit()
    conn.close()


def test_readonly_store_reads_and_cannot_write(tmp_path):
    path = tmp_path / "s.sqlite"
    s = RunStore(path)
    s.set_meta(status="finished")
    s.close()
    r = RunStore(path, readonly=True)
    try:
        assert r.meta() == {"status": "finished"}
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            r.set_meta(status="changed")
    finally:
        r.close()


def test_readonly_store_never_migrates_an_old_schema(tmp_path):
    path = tmp_path / "s.sqlite"
    _old_store(path)
    before = path.read_bytes()
    with pytest.raises(StoreOutdated, match="schema version 0.*`failforge resume` with this version upgrades it"):
        RunStore(path, readonly=True)
    assert path.read_bytes() == before
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0


def test_writer_refuses_a_store_from_a_newer_failforge(tmp_path):
    path = tmp_path / "s.sqlite"
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer than this failforge"):
        RunStore(path)
    RunStore(path, readonly=True).close()  # a reader still reads what it knows


def _version_1_store(path, fingerprint, requests, texts) -> None:
    """A store as failforge wrote it at schema version 1: call keys as 64 hex digits."""
    from failforge.run.store import _split_sql

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for stmt in _split_sql(MIGRATIONS[0]):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version=1")
    for i, (r, text) in enumerate(zip(requests, texts)):
        conn.execute(
            "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (r.key(fingerprint), fingerprint, "echo", r.model_dump_json(), text, 3, 4, 0.5, "stop", None, 1000.0 + i),
        )
    conn.execute("""INSERT INTO meta VALUES ('status', '"finished"')""")
    conn.close()


def test_a_version_1_store_is_read_as_it_is_and_migrated_by_a_writer(tmp_path):
    path = tmp_path / "s.sqlite"
    inner = EchoModel()
    fp = inner.fingerprint
    params = SamplingParams(n=2, temperature=1.0, seed=3)
    requests = expand([as_conversation(p) for p in ("a", "b", "c")], params)
    texts = [f"answer {i}" for i in range(len(requests))]
    _version_1_store(path, fp, requests, texts)
    keys = [r.key(fp) for r in requests]

    # a reader reads it without writing: every call by its hex key
    before = path.read_bytes()
    r = RunStore(path, readonly=True)
    try:
        assert r.schema_version == 1
        assert {k: c.text for k, c in r.get_calls(keys).items()} == dict(zip(keys, texts))
        assert r.call_totals()["calls"] == len(keys) and r.tokens_spent() == 7 * len(keys)
    finally:
        r.close()
    assert path.read_bytes() == before

    # a writer migrates it: keys become the 32 bytes of the same SHA-256, rows keep their order
    w = RunStore(path)
    try:
        assert w.schema_version == len(MIGRATIONS)
        rows = w._conn.execute("SELECT key, text FROM calls ORDER BY rowid").fetchall()
        assert [(bytes(k).hex(), t) for k, t in rows] == list(zip(keys, texts))
        assert w.tokens_spent() == 7 * len(keys)  # counted from call_keys now
        assert w.meta() == {"status": "finished"}
        # resuming repeats nothing: every request is answered from the store
        model = CachedModel(inner, w)
        out = model.generate(["a", "b", "c"], params)
        assert inner.calls == [] and model.sent == 0
        assert [c.text for cs in out for c in cs] == texts and all(c.cached for cs in out for c in cs)
        # new calls go in beside the old ones, and are found again
        model.generate(["d"], params)
        assert len(inner.calls) == 2 and w.call_totals()["calls"] == len(keys) + 2
        assert CachedModel(EchoModel(), w).generate(["d"], params)[0][0].cached
    finally:
        w.close()
    # and the migrated store opens for reading
    r = RunStore(path, readonly=True)
    try:
        assert len(r.get_calls(keys)) == len(keys)
    finally:
        r.close()


def test_two_writers_in_turn_never_store_a_key_twice(tmp_path):
    # the store finds calls through an index in memory; a second connection's calls
    # reach it before it looks up or stores anything
    path = tmp_path / "s.sqlite"
    a, b = RunStore(path), RunStore(path)
    try:
        params = SamplingParams(n=2, temperature=1.0, seed=5)
        first = CachedModel(EchoModel(), a)
        first.generate(["x", "y"], params)
        other = EchoModel()
        second = CachedModel(other, b)
        out = second.generate(["x", "y", "z"], params)
        assert len(other.calls) == 2 and all(c.cached for cs in out[:2] for c in cs)
        # b's calls reach a too: nothing is sent again, nothing is stored twice
        again = EchoModel()
        assert all(c.cached for cs in CachedModel(again, a).generate(["x", "y", "z"], params) for c in cs)
        assert again.calls == []
        with a.transaction() as c:
            assert c.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM calls").fetchone() == (6, 6)
            assert c.execute("SELECT COUNT(*) FROM call_keys").fetchone()[0] == 6
        # and a's token count follows b's calls
        assert a.tokens_spent() == b.tokens_spent() == sum(
            r[0] for r in sqlite3.connect(path).execute("SELECT prompt_tokens + completion_tokens FROM calls")
        )
        # the same key stored by both in one go: one row
        item = (Request(messages=tuple(as_conversation("w")), params=params).key("fp"),
                Request(messages=tuple(as_conversation("w")), params=params), Completion(text="w"))
        a.put_calls("fp", "m", [item, item])
        b.put_calls("fp", "m", [item])
        assert a.call_totals()["calls"] == 7
    finally:
        a.close()
        b.close()


def test_calls_deleted_by_hand_or_a_vacuum_leave_the_index_true(tmp_path):
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    params = SamplingParams(n=1, temperature=1.0, seed=5)
    CachedModel(EchoModel(), store).generate(["a", "b", "c"], params)
    with store.transaction() as c:
        c.execute("DELETE FROM calls WHERE text LIKE 'echo: b %'")
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.close()
    store = RunStore(path)
    try:
        inner = EchoModel()
        out = CachedModel(inner, store).generate(["a", "b", "c"], params)
        assert len(inner.calls) == 1 and [cs[0].cached for cs in out] == [True, False, True]
        with store.transaction() as c:
            assert c.execute("SELECT COUNT(*) FROM call_keys").fetchone()[0] == 3
            assert c.execute("SELECT COUNT(*) FROM calls JOIN call_keys USING (id, key)").fetchone()[0] == 3
    finally:
        store.close()


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args], capture_output=True, text=True, timeout=300
    )


def test_report_runs_and_export_leave_the_store_as_it_was(tmp_path):
    from test_report import build_run

    run_dir = build_run(tmp_path / "runs" / "r1")
    store = run_dir / "store.sqlite"
    before = (store.read_bytes(), store.stat().st_mtime_ns)
    for args in (
        ["report", str(run_dir), "-o", str(tmp_path / "r.html")],
        ["runs", str(tmp_path / "runs")],
        ["export", str(run_dir), "-o", str(tmp_path / "x"), "--what", "all"],
    ):
        proc = _cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert (store.read_bytes(), store.stat().st_mtime_ns) == before, args


def test_old_store_report_is_one_line_and_runs_lists_it_outdated(tmp_path):
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: answer\n")
    _old_store(run_dir / "store.sqlite")
    before = (run_dir / "store.sqlite").read_bytes()
    proc = _cli("report", str(run_dir), "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "schema version 0" in proc.stderr and "failforge resume" in proc.stderr
    proc = _cli("runs", str(tmp_path / "runs"), "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = __import__("json").loads(proc.stdout)
    assert (row["status"], row["resumable"]) == ("outdated", True) and "schema version 0" in row["error"]
    assert (run_dir / "store.sqlite").read_bytes() == before
