"""Real servers for tests: llama-cpp-python's OpenAI-compatible server, and a
fault-injecting HTTP proxy to put in front of it.

The proxy is written on asyncio streams because it must do what an HTTP framework
will not: drop a connection without answering, or hold a request past the client's
timeout. Everything it forwards goes to the upstream through httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: fault kinds a schedule may hold
FAULTS = ("ok", "500", "503", "429", "400", "401", "403", "drop", "timeout", "slow", "truncate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_models(
    base_url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None, headers: dict | None = None
) -> None:
    """Poll GET {base_url}/models until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with code {proc.returncode}:\n{tail}")
        try:
            if httpx.get(base_url + "/models", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base_url}/models did not answer within {timeout_s}s")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class LlamaServer:
    """``python -m llama_cpp.server`` on a free port; it answers one request at a time."""

    model_path: str
    n_threads: int = 2
    n_ctx: int = 2048
    log_path: Path | None = None
    #: when set, the server refuses requests without ``Authorization: Bearer <api_key>``
    api_key: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 90) -> LlamaServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", self.model_path,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            *(["--api_key", self.api_key] if self.api_key else []),
        ]  # fmt: skip
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        # its own process group, so teardown reaches any child it starts
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            wait_for_models(self.base_url, timeout_s, self.proc, self.log_path, auth)
            # the first answers page the weights in and are many times slower: pay that here
            httpx.post(
                self.base_url + "/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
                headers=auth,
                timeout=timeout_s,
            ).raise_for_status()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that injects faults from a schedule.

    ``schedule`` lists one fault per request received, in arrival order; requests
    past its end are forwarded ("ok"). "truncate" forwards the request, then sends
    half of the answer's body under the full Content-Length and closes. Counts what it receives and what it forwards,
    the most requests it held at once, and the headers and bodies it saw.
    """

    def __init__(self, upstream: str, schedule: list[str] | None = None, delay_s: float = 5.0, retry_after: str = "1"):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:8000 (no /v1)
        self.delay_s = delay_s
        self.retry_after = retry_after
        self.port = free_port()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.reset(schedule)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, schedule: list[str] | None = None) -> None:
        for f in schedule or []:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}")
        with self._lock:
            self.schedule = list(schedule or [])
            self.received = 0
            self.posts_received = 0
            self.forwarded = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.faults: list[str] = []
            self.forwarded_bodies: list[bytes] = []
            self.seen_headers: list[dict[str, str]] = []

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
            ready.set()
            self._loop.run_forever()
            # end the connections still held (a "timeout" fault sleeps) before the loop closes
            tasks = asyncio.all_tasks(self._loop)
            for t in tasks:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- one connection ----------------------------------------------------------
    def _next_fault(self, headers: dict[str, str], method: str) -> str:
        with self._lock:
            self.received += 1
            self.posts_received += method == "POST"
            self.seen_headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            # only completions take faults: GET /models (the fingerprint) stays clean
            fault = self.schedule.pop(0) if self.schedule and method == "POST" else "ok"
            if fault not in ("ok", "slow"):
                self.faults.append(fault)
            return fault

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one connection may carry many requests
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                fault = self._next_fault(headers, method)
                try:
                    keep = await self._answer(fault, method, target, headers, body, reader, writer)
                finally:
                    with self._lock:
                        self.in_flight -= 1
                if not keep:
                    return
        finally:
            writer.close()

    async def _answer(self, fault, method, target, headers, body, reader, writer) -> bool:
        """Write the answer for one request; False closes the connection."""
        if fault == "drop":
            return False  # close without a byte: the client sees a dropped connection
        if fault == "timeout":
            await asyncio.sleep(self.delay_s)  # past the client's timeout, never forwarded
            return False
        if fault in ("500", "503", "429", "400", "401", "403"):
            extra = {"Retry-After": self.retry_after} if fault == "429" else {}
            msg = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
            await self._write(writer, int(fault), {"Content-Type": "application/json", **extra}, msg)
            return True
        if fault == "slow":
            await asyncio.sleep(self.delay_s)
            if reader.at_eof():  # the client went away meanwhile: a proxy would not forward it
                return False
        fwd = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
        async with httpx.AsyncClient(timeout=600) as client:
            resp = await client.request(method, self.upstream + target, content=body, headers=fwd)
        with self._lock:
            self.forwarded += 1
            if method == "POST":
                self.forwarded_bodies.append(body)
        ctype = resp.headers.get("content-type", "application/json")
        if fault == "truncate":
            cut = resp.content[: len(resp.content) // 2]
            await self._write(writer, resp.status_code, {"Content-Type": ctype}, cut, length=len(resp.content))
            return False
        await self._write(writer, resp.status_code, {"Content-Type": ctype}, resp.content)
        return True

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes, length: int | None = None
    ) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body) if length is None else length}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
