"""Several OpenAI-compatible endpoints behind one model: balancing, ejection, fingerprint.

The logic runs against the small fake server (tests/fake_openai.py); one test puts the
session's real llama.cpp server behind two URLs (direct and through the fault proxy).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_openai import FakeOpenAI

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import SamplingParams
from failforge.models.openai import OpenAIModel
from failforge.models.spec import ModelSpec
from failforge.run.cached import CachedModel
from failforge.run.store import RunStore

pytest_plugins = ["fixtures_servers"]


def model(urls, **kw) -> OpenAIModel:
    eject = kw.pop("eject_s", 0.3)
    kw.setdefault("max_retries", 4)
    return OpenAIModel(ModelSpec(backend="openai", base_url=urls, model="fake", **kw), backoff_base_s=0.01, eject_s=eject)


def test_a_list_of_urls_is_checked():
    with pytest.raises(ConfigError, match="must start with http"):
        model(["http://127.0.0.1:1/v1", "ftp://x/v1"])
    with pytest.raises(ConfigError, match="twice"):
        model(["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1/"])
    with pytest.raises(ConfigError, match="base_url"):
        model([])


def test_fingerprint_names_the_served_model_not_the_urls():
    with FakeOpenAI() as a, FakeOpenAI() as b, FakeOpenAI(model_id="other") as c:
        with model(a.base_url) as one, model([a.base_url, b.base_url]) as two, model([b.base_url]) as other_url:
            assert one.fingerprint == two.fingerprint == other_url.fingerprint  # adding an endpoint keeps the cache
        with model([a.base_url, c.base_url]) as mixed:
            with pytest.raises(ModelUnavailable) as e:
                mixed.probe()
        msg = str(e.value)
        assert "\n" not in msg and "serve different models" in msg and c.base_url in msg


def test_requests_go_where_fewest_are_outstanding():
    # a slow endpoint and a fast one, two slots each: the fast one takes most requests
    # (round robin would split them evenly)
    with FakeOpenAI(delay_s=0.4) as slow, FakeOpenAI() as fast:
        with model([slow.base_url, fast.base_url], max_concurrency=2) as m:
            outs = m.generate([f"q{i}" for i in range(24)], SamplingParams(max_tokens=4))
        assert [o[0].text for o in outs] == [f"answer to: q{i}" for i in range(24)]
        assert slow.calls + fast.calls == 24
        assert fast.calls >= 3 * slow.calls, (slow.calls, fast.calls)
        assert slow.max_in_flight <= 2 and fast.max_in_flight <= 2


def test_a_down_endpoint_is_ejected_and_comes_back(caplog):
    with FakeOpenAI(mode="down") as bad, FakeOpenAI() as good:
        m = model([bad.base_url, good.base_url], max_concurrency=2, eject_s=0.3)
        try:
            m.fingerprint  # noqa: B018 - what a run takes first (the cache keys need it)
            outs = m.generate([f"q{i}" for i in range(12)], SamplingParams(max_tokens=4))
            assert [o[0].text for o in outs] == [f"answer to: q{i}" for i in range(12)]
            assert good.calls == 12
            # ejected at the fingerprint's model check, before any completion was sent to it
            assert bad.posts == 0
            assert m.take_events()["endpoint ejected"] == 1
            assert bad.base_url in caplog.text and "health check" in caplog.text
            bad.mode = "ok"
            time.sleep(1.0)  # past the next check: it passes, and the endpoint is back
            m.generate([f"r{i}" for i in range(12)], SamplingParams(max_tokens=4))
            assert bad.calls > 0 and bad.calls + good.calls == 24
        finally:
            m.close()


def test_an_endpoint_that_breaks_mid_run_is_ejected():
    with FakeOpenAI(delay_s=0.05) as a, FakeOpenAI(delay_s=0.05) as b:
        m = model([a.base_url, b.base_url], max_concurrency=2, eject_s=30)
        try:
            m.fingerprint  # noqa: B018 - both endpoints up when the run starts
            a.mode = "down"
            outs = m.generate([f"q{i}" for i in range(16)], SamplingParams(max_tokens=4))
            assert [o[0].text for o in outs] == [f"answer to: q{i}" for i in range(16)]
            assert b.calls == 16 and a.calls == 0
            assert a.posts <= 2  # the requests already on their way when it broke; then it is out
            events = m.take_events()
            assert events["endpoint ejected"] == 1 and events["fault: HTTP 503"] == a.posts
        finally:
            m.close()


def test_every_endpoint_down_ends_in_one_line():
    with FakeOpenAI() as a, FakeOpenAI() as b:
        m = model([a.base_url, b.base_url], max_retries=2)
        try:
            m.fingerprint  # noqa: B018
            a.mode = b.mode = "down"
            with pytest.raises(ModelUnavailable) as e:
                m.generate(["q"], SamplingParams(max_tokens=4))
            assert "\n" not in str(e.value) and "3 attempts" in str(e.value) and "HTTP 503" in str(e.value)
        finally:
            m.close()


def test_cached_model_keeps_endpoints_full_and_adding_one_keeps_the_cache(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    with FakeOpenAI(delay_s=0.1) as a, FakeOpenAI(delay_s=0.1) as b:
        first = CachedModel(model([a.base_url], max_concurrency=3), store)
        assert first.max_in_flight == 6
        t0 = time.perf_counter()
        first.generate([f"q{i}" for i in range(12)], SamplingParams(max_tokens=4))
        one = time.perf_counter() - t0
        first.close()
        assert a.max_in_flight == 3  # the window kept every slot busy, and no more
        both = CachedModel(model([a.base_url, b.base_url], max_concurrency=3), store)
        again = both.generate([f"q{i}" for i in range(12)], SamplingParams(max_tokens=4))
        assert both.sent == 0 and all(o[0].cached for o in again)  # nothing asked again
        t0 = time.perf_counter()
        both.generate([f"n{i}" for i in range(24)], SamplingParams(max_tokens=4))
        two = time.perf_counter() - t0
        both.close()
        assert b.max_in_flight == 3 and b.calls >= 8
        assert two < 1.6 * one  # twice the work on twice the endpoints
    store.close()


def test_real_server_behind_two_urls(fault_proxy, llama_server):
    """The session's llama.cpp server, directly and through the fault proxy. The proxy
    is stopped after the run starts: the request sent to it fails, its health check
    fails, it is ejected, and every answer is the server's own."""
    greedy = SamplingParams(max_tokens=8, temperature=0.0, seed=3)
    prompts = ["What is 2+2?", "Name a colour.", "Say hello in French."]
    with OpenAIModel(ModelSpec(backend="openai", base_url=llama_server.base_url, model="smollm2")) as direct:
        want = [o[0].text for o in direct.generate(prompts, greedy)]
        fp = direct.fingerprint
    spec = ModelSpec(backend="openai", base_url=[fault_proxy.base_url, llama_server.base_url], model="smollm2", max_concurrency=1)
    with OpenAIModel(spec, backoff_base_s=0.01, eject_s=60) as both:
        assert both.fingerprint == fp  # the same model, whatever the URLs
        fault_proxy.stop()  # the endpoint goes away mid-run
        got = [o[0].text for o in both.generate(prompts, greedy)]
        events = both.take_events()
    assert got == want
    assert not fault_proxy.forwarded_bodies
    assert events["endpoint ejected"] == 1 and events.get("fault: connection failed", 0) <= 1


def test_async_window_commits_as_answers_come(tmp_path):
    """Answers are stored while the others are still on their way (no barrier)."""
    store = RunStore(tmp_path / "store.sqlite")
    with FakeOpenAI(delay_s=0.2) as a:
        m = CachedModel(model([a.base_url], max_concurrency=2), store)
        seen: list[int] = []
        m.progress = lambda n: seen.append(store.call_totals()["calls"])
        asyncio.run(m.agenerate([f"q{i}" for i in range(6)], SamplingParams(max_tokens=4)))
        m.close()
    assert store.call_totals()["calls"] == 6
    assert len(seen) >= 3 and seen[0] < 6  # stored in several commits, the first long before the end
    store.close()
