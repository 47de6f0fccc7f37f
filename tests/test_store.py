import sqlite3

from fakes import EchoModel

from failforge.models.base import Completion, Request, SamplingParams, expand, as_conversation
from failforge.run.cached import CachedModel
from failforge.run.records import AttemptRecord, Provenance, load, put
from failforge.run.store import MIGRATIONS, RunStore


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
