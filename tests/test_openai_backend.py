"""The "openai" backend against a real llama.cpp server, and its input checks."""

from __future__ import annotations

import asyncio
import email.utils
import json
import sys
import time

import pytest

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import SamplingParams
from failforge.models.factory import load_model
from failforge.models.openai import OpenAIModel, retry_after_seconds
from failforge.models.spec import ModelSpec
from failforge.run.cached import CachedModel
from failforge.run.store import RunStore
from servers import free_port

pytest_plugins = ["fixtures_servers"]

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello in French."]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, seed=1)


def spec(base_url: str, **kw) -> ModelSpec:
    return ModelSpec(backend="openai", base_url=base_url, model="smollm2", **kw)


# --- input checks (no server) ------------------------------------------------------
def test_base_url_is_required():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIModel(ModelSpec(backend="openai", model="x"))


@pytest.mark.parametrize("url", ["ftp://host/v1", "127.0.0.1:8000/v1", "http://"])
def test_base_url_must_be_http(url):
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIModel(spec(url))


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("FAILFORGE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError) as e:
        OpenAIModel(spec("http://127.0.0.1:1/v1", api_key_env="FAILFORGE_NO_SUCH_KEY"))
    assert "FAILFORGE_NO_SUCH_KEY" in str(e.value) and "\n" not in str(e.value)


def test_retry_after_header_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.0 <= retry_after_seconds(date, now=now) <= 10.5
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_vllm_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(ModelUnavailable) as e:
        load_model(ModelSpec(backend="vllm", model="some/model"))
    assert str(e.value) == "backend 'vllm' needs the optional extra: pip install 'failforge[vllm]'"


def test_dead_port_ends_in_one_line_model_unavailable():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    m = OpenAIModel(spec(url, max_retries=2, timeout_s=2), backoff_base_s=0.01)
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailable) as e:
        m.probe()
    msg = str(e.value)
    assert "\n" not in msg
    assert url + "/models" in msg and "3 attempts" in msg and "ConnectError" in msg
    assert time.perf_counter() - t0 < 5  # bounded: three refused connects and short waits
    m.close()


# --- against the real server -----------------------------------------------------
@pytest.fixture(scope="module")
def direct(llama_server):
    m = OpenAIModel(spec(llama_server.base_url, max_concurrency=2))
    yield m
    m.close()


def test_probe_and_fingerprint(direct, llama_server):
    ids = direct.probe()
    assert len(ids) == 1 and ids[0].endswith(".gguf")  # llama_cpp.server names the model by its file
    fp = direct.fingerprint
    with (
        OpenAIModel(spec(llama_server.base_url)) as same,
        OpenAIModel(spec(llama_server.base_url, chat_template="{{ messages }}")) as other_template,
        OpenAIModel(ModelSpec(backend="openai", base_url=llama_server.base_url, model="other")) as other_name,
    ):
        assert same.fingerprint == fp  # stable across instances
        assert len({fp, other_template.fingerprint, other_name.fingerprint}) == 3


def test_completions_carry_tokens_latency_and_logprobs(direct):
    # llama_cpp.server is slow to compute logprobs (seconds a request here): keep this small
    outs = direct.generate(PROMPTS[:1], SamplingParams(max_tokens=6, temperature=0.0, n=2, logprobs=True))
    assert [len(o) for o in outs] == [2]
    for a, b in outs:
        assert (a.sample_index, b.sample_index) == (0, 1)
        assert a.text and a.text == b.text  # greedy: both samples agree
        assert a.prompt_tokens > 5 and 0 < a.completion_tokens <= 6
        assert a.latency_s > 0 and a.finish_reason in ("stop", "length")
        assert a.logprobs is not None and len(a.logprobs) == a.completion_tokens
        assert all(lp <= 0.0 for lp in a.logprobs)


def test_each_sample_is_one_request_with_its_own_seed(fault_proxy):
    p = SamplingParams(max_tokens=4, temperature=0.7, top_p=0.9, seed=40, n=3, stop=["\n\n"])
    with OpenAIModel(spec(fault_proxy.base_url)) as m:
        outs = m.generate(["Hi"], p)
    assert [c.sample_index for c in outs[0]] == [0, 1, 2]
    bodies = [json.loads(b) for b in fault_proxy.forwarded_bodies]
    assert sorted(b["seed"] for b in bodies) == [40, 41, 42]
    for b in bodies:
        assert (b["n"], b["temperature"], b["top_p"], b["max_tokens"], b["stop"]) == (1, 0.7, 0.9, 4, ["\n\n"])
        assert b["messages"] == [{"role": "user", "content": "Hi"}] and "logprobs" not in b


def test_stop_strings_cut_the_answer(direct):
    prompt = ["Count from 1 to 20 separated by commas."]
    full = direct.generate(prompt, GREEDY)[0][0].text
    words = full.split()
    assert len(words) > 3
    cut = direct.generate(prompt, GREEDY.model_copy(update={"stop": (words[2],)}))[0][0]
    assert words[2] not in cut.text and full.startswith(cut.text.rstrip()) and len(cut.text) < len(full)


def test_sync_and_async_paths_agree(direct):
    sync = [o[0].text for o in direct.generate(PROMPTS, GREEDY)]

    async def run():  # a caller on its own event loop
        return await direct.agenerate(PROMPTS, GREEDY)

    assert [o[0].text for o in asyncio.run(run())] == sync


def test_cached_model_reuses_every_answer(llama_server, tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    first = CachedModel(OpenAIModel(spec(llama_server.base_url)), store)
    assert first.chunk_size == 1  # every answer committed as it arrives
    a = asyncio.run(first.agenerate(PROMPTS, GREEDY))
    assert first.sent == len(PROMPTS)
    first.close()
    again = CachedModel(OpenAIModel(spec(llama_server.base_url)), store)
    b = again.generate(PROMPTS, GREEDY)
    assert again.sent == 0 and all(o[0].cached for o in b)
    assert [o[0].text for o in a] == [o[0].text for o in b]
    again.close()
    store.close()
