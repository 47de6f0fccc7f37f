"""The "openai" backend through a fault-injecting proxy in front of a real llama.cpp server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
import yaml
from runcli import stored_calls

from failforge.errors import ModelUnavailable
from failforge.models.base import SamplingParams
from failforge.models.openai import OpenAIModel
from failforge.models.spec import ModelSpec
from failforge.run.cached import CachedModel
from failforge.run.records import AnswerRecord
from failforge.run.store import RunStore

pytest_plugins = ["fixtures_servers"]

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello in French.", "What is the capital of Italy?"]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, seed=3)


def model(url: str, **kw) -> OpenAIModel:
    kw.setdefault("max_retries", 6)
    return OpenAIModel(ModelSpec(backend="openai", base_url=url, model="smollm2", **kw), backoff_base_s=0.02)


def posts(proxy) -> int:
    """Completion requests the proxy received (GET /models is the fingerprint's)."""
    return len(proxy.faults) + len(proxy.forwarded_bodies)


@pytest.fixture(scope="module")
def no_fault_answers(llama_server):
    with model(llama_server.base_url) as m:
        return [o[0].text for o in m.generate(PROMPTS, GREEDY)]


@pytest.mark.slow
def test_retries_recover_every_answer(fault_proxy, no_fault_answers, tmp_path):
    schedule = ["500", "429", "drop", "timeout", "503"]
    fault_proxy.reset(schedule)
    fault_proxy.retry_after = "0"
    # a serialising server answers a queued request within ~2 s here; the held one waits 6 s
    fault_proxy.delay_s = 6.0
    store = RunStore(tmp_path / "store.sqlite")
    m = CachedModel(model(fault_proxy.base_url, max_concurrency=2, timeout_s=4.5), store)
    outs = asyncio.run(m.agenerate(PROMPTS, GREEDY))
    m.close()
    assert [o[0].text for o in outs] == no_fault_answers
    assert sorted(fault_proxy.faults) == sorted(schedule)
    bodies = [json.loads(b)["messages"][0]["content"] for b in fault_proxy.forwarded_bodies]
    assert sorted(bodies) == sorted(PROMPTS)  # every answer forwarded exactly once
    assert store.call_totals()["calls"] == len(PROMPTS)
    store.close()


def test_retry_after_is_honoured(fault_proxy, no_fault_answers):
    fault_proxy.reset(["429"])
    fault_proxy.retry_after = "1"
    with model(fault_proxy.base_url) as m:
        m.fingerprint  # noqa: B018 - GET /models first, so only the completion is timed
        t0 = time.perf_counter()
        out = m.generate(PROMPTS[:1], GREEDY)[0][0]
        elapsed = time.perf_counter() - t0
    assert out.text == no_fault_answers[0]
    assert elapsed >= 1.0  # the backoff alone would have waited about 0.02 s
    assert fault_proxy.faults == ["429"] and len(fault_proxy.forwarded_bodies) == 1


def test_retries_run_out_in_one_line(fault_proxy):
    fault_proxy.reset(["500"] * 5)
    with model(fault_proxy.base_url, max_retries=2) as m:
        with pytest.raises(ModelUnavailable) as e:
            m.generate(["Hi"], GREEDY)
    msg = str(e.value)
    assert "\n" not in msg
    assert fault_proxy.base_url + "/chat/completions" in msg and "3 attempts" in msg and "HTTP 500" in msg
    assert posts(fault_proxy) == 3 and not fault_proxy.forwarded_bodies


@pytest.mark.parametrize("code", ["401", "403"])
def test_auth_errors_are_not_retried_and_stop_the_call(fault_proxy, monkeypatch, code):
    monkeypatch.setenv("FAILFORGE_TEST_KEY", "k-" + secrets.token_hex(8))
    fault_proxy.reset([code, "500", "500"])
    with model(fault_proxy.base_url, api_key_env="FAILFORGE_TEST_KEY") as m:
        with pytest.raises(ModelUnavailable) as e:
            m.generate(["Hi"], GREEDY)
    msg = str(e.value)
    assert f"HTTP {code}: injected {code}" in msg and "\n" not in msg
    assert "$FAILFORGE_TEST_KEY" in msg
    assert posts(fault_proxy) == 1


def test_a_refused_request_is_one_error_and_the_others_are_answered(fault_proxy, no_fault_answers):
    # the second request is refused (a 400, as for a prompt past the context window): not retried, not raised
    fault_proxy.reset(["ok", "400", "500"])
    with model(fault_proxy.base_url, max_concurrency=1) as m:
        outs = [o[0] for o in m.generate(PROMPTS[:3], GREEDY)]
        events = m.take_events()
    assert outs[1].error == "HTTP 400: injected 400" and outs[1].text == "" and outs[1].finish_reason == "error"
    assert [outs[0].text, outs[2].text] == [no_fault_answers[0], no_fault_answers[2]]
    assert posts(fault_proxy) == 4  # 3 requests, one retried after its 500
    assert events == {"requests": 4, "retries": 1, "fault: HTTP 500": 1, "refused: HTTP 400": 1}


@pytest.mark.parametrize("bound", [1, 3])
def test_in_flight_bound_is_respected(fault_proxy, tmp_path, bound):
    # each request waits 0.2 s at the proxy before it is forwarded, so they overlap there
    fault_proxy.reset(["slow"] * 6)
    fault_proxy.delay_s = 0.2
    store = RunStore(tmp_path / "store.sqlite")
    m = CachedModel(model(fault_proxy.base_url, max_concurrency=bound), store)
    # the async path hands every request to the backend as its own chunk, all at once
    asyncio.run(m.agenerate([f"Say the number {i}." for i in range(6)], SamplingParams(max_tokens=4)))
    m.close()
    store.close()
    assert len(fault_proxy.forwarded_bodies) == 6
    assert fault_proxy.max_in_flight == bound


def test_api_key_is_never_written(fault_proxy, monkeypatch, tmp_path, caplog):
    key = "sk-failforge-" + secrets.token_hex(12)
    monkeypatch.setenv("FAILFORGE_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    fault_proxy.reset(["500", "drop"])
    store = RunStore(tmp_path / "store.sqlite")
    inner = model(fault_proxy.base_url, api_key_env="FAILFORGE_TEST_KEY")
    m = CachedModel(inner, store)
    m.generate(PROMPTS[:2], GREEDY)
    fault_proxy.reset(["401"])
    with pytest.raises(ModelUnavailable) as e:
        m.generate(["Another question?"], GREEDY)
    seen = [h.get("authorization") for h in fault_proxy.seen_headers]
    assert seen and all(v == f"Bearer {key}" for v in seen)  # it was sent, every time
    store.close()
    m.close()
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(key.encode() in b for b in written)
    for text in (caplog.text, str(e.value), repr(inner), repr(inner._client.headers), inner.fingerprint):
        assert key not in text
    assert "retry" in caplog.text.lower() or "attempt" in caplog.text  # the retries were logged


def _failforge(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from failforge.cli import main; main()", "--quiet", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _answers(run_dir) -> list[tuple[str, list[str]]]:
    store = RunStore(run_dir / "store.sqlite")
    try:
        return sorted((r["id"], r["responses"]) for r in store.records(AnswerRecord.KIND))
    finally:
        store.close()


@pytest.mark.slow
def test_killed_run_resumes_without_asking_twice(fault_proxy, tmp_path):
    """`failforge run` through the proxy, SIGKILLed part-way, then `failforge resume`."""
    key = "sk-failforge-" + secrets.token_hex(12)
    env = {**os.environ, "FAILFORGE_TEST_KEY": key}
    prompts = tmp_path / "prompts.jsonl"
    texts = PROMPTS + ["Name a fruit.", "What is 3+5?"]
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(texts)))
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "answer",
                "prompts": str(prompts),
                "sampling": {"max_tokens": 12, "temperature": 0.0, "seed": 3, "n": 1},
                "model": {"backend": "openai", "base_url": fault_proxy.base_url, "model": "smollm2",
                          "api_key_env": "FAILFORGE_TEST_KEY", "max_concurrency": 1},
            }
        )
    )  # fmt: skip
    n = len(texts)

    whole = _failforge("run", str(config), "--run-dir", str(tmp_path / "whole"), env=env)
    assert whole.wait(300) == 0, whole.stdout.read().decode()
    assert len(fault_proxy.forwarded_bodies) == n

    # Every completion now waits 1.5 s at the proxy before it is forwarded. Answers are
    # committed on a thread of their own, so request 3 can reach the proxy a moment
    # before answer 2 is on disk: the kill waits for both, inside request 3's hold. It
    # then leaves answers 1-2 stored and request 3 never forwarded. (Killed before answer
    # 2's commit, the resumed run rightly asks request 2 again; with a 0.4 s hold a late
    # kill once let request 3 through, and the resumed run rightly asked it again.)
    fault_proxy.reset(["slow"] * 100)
    fault_proxy.delay_s = 1.5
    killed = _failforge("run", str(config), "--run-dir", str(tmp_path / "killed"), env=env)
    deadline = time.monotonic() + 120
    while fault_proxy.posts_received < 3 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    while stored_calls(tmp_path / "killed" / "store.sqlite") < 2 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert fault_proxy.posts_received == 3 and not fault_proxy.forwarded_bodies[2:]  # still inside the hold
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while fault_proxy.in_flight and time.monotonic() < deadline:  # the held request 3: dropped, or forwarded
        time.sleep(0.05)
    assert len(fault_proxy.forwarded_bodies) == 2
    assert len(_answers(tmp_path / "killed")) == 0  # records are written at the end, calls as they come

    resumed = _failforge("resume", str(tmp_path / "killed"), env=env)
    assert resumed.wait(300) == 0, resumed.stdout.read().decode()
    assert _answers(tmp_path / "killed") == _answers(tmp_path / "whole")
    contents = [json.loads(b)["messages"][0]["content"] for b in fault_proxy.forwarded_bodies]
    assert sorted(contents) == sorted(texts)  # each prompt forwarded once
    for path in tmp_path.rglob("*"):  # run dirs, logs, stores: the key is in none of them
        assert not path.is_file() or key.encode() not in path.read_bytes(), path


def test_backoff_gives_up_the_concurrency_slot(fault_proxy, no_fault_answers):
    # one slot; the first request is told to come back in 1 s: the second one is sent meanwhile
    fault_proxy.reset(["429"])
    fault_proxy.retry_after = "1"
    with model(fault_proxy.base_url, max_concurrency=1) as m:
        m.fingerprint  # noqa: B018 - GET /models first
        outs = asyncio.run(m.agenerate(PROMPTS[:2], GREEDY))
    assert [o[0].text for o in outs] == no_fault_answers[:2]
    order = [json.loads(b)["messages"][0]["content"] for b in fault_proxy.forwarded_bodies]
    assert order == [PROMPTS[1], PROMPTS[0]]  # the 429'd request went second, after its wait
    assert fault_proxy.max_in_flight == 1


@pytest.mark.parametrize("fault", ["truncate", "drop", "timeout"])
def test_cut_answers_are_retried_and_counted(fault_proxy, no_fault_answers, fault):
    fault_proxy.reset([fault])
    fault_proxy.delay_s = 9.0  # past the client's timeout, which a real answer stays well inside on a loaded machine
    with model(fault_proxy.base_url, timeout_s=8.0) as m:
        out = m.generate(PROMPTS[:1], GREEDY)[0][0]
        events = m.take_events()
    assert out.text == no_fault_answers[0] and out.error is None
    kind = {"truncate": "connection cut", "drop": "connection cut", "timeout": "timeout"}[fault]
    assert events == {"requests": 2, "retries": 1, f"fault: {kind}": 1}


def test_counts_reach_the_store_and_a_budget_stops_before_sending(fault_proxy, tmp_path):
    from failforge.errors import BudgetReached

    fault_proxy.reset(["500", "429"])
    fault_proxy.retry_after = "0"
    store = RunStore(tmp_path / "store.sqlite")
    m = CachedModel(model(fault_proxy.base_url, max_concurrency=1), store, label="target")
    m.generate(PROMPTS[:2], GREEDY)
    spent = store.tokens_spent()
    assert spent == store.call_totals()["prompt_tokens"] + store.call_totals()["completion_tokens"] > 0
    assert store.meta()["backend_events"] == {
        "target": {"requests": 4, "retries": 2, "fault: HTTP 500": 1, "fault: HTTP 429": 1}
    }
    m.close()
    # a budget already spent: nothing more is sent, in one line
    sent = posts(fault_proxy)
    m = CachedModel(model(fault_proxy.base_url, max_concurrency=1), store, label="target", token_budget=spent)
    with pytest.raises(BudgetReached, match="token budget of .* reached") as e:
        asyncio.run(m.agenerate(PROMPTS[2:], GREEDY))
    assert "\n" not in str(e.value) and posts(fault_proxy) == sent
    assert m.generate(PROMPTS[:2], GREEDY)[0][0].cached  # stored answers still come back
    m.close()
    store.close()
