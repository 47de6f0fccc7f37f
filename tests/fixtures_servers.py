"""Pytest fixtures for the server-backed tests: import them from conftest.py."""

from __future__ import annotations

import os

import pytest

from servers import FaultProxy, LlamaServer


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The bundled SmolLM2 GGUF behind ``python -m llama_cpp.server`` (one per test session)."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    from failforge.models.registry import resolve_weights

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    threads = int(os.environ.get("FAILFORGE_TEST_THREADS", "2"))
    with LlamaServer(str(resolve_weights("smollm2-135m-instruct")), n_threads=threads, log_path=log) as server:
        yield server


@pytest.fixture
def fault_proxy(llama_server):
    """A fresh fault-injecting proxy in front of the session's llama server."""
    with FaultProxy(llama_server.base_url.removesuffix("/v1")) as proxy:
        yield proxy
