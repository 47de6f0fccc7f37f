"""Backend "openai": any server that speaks the OpenAI chat-completions API.

vLLM, Ollama, llama.cpp's server, TGI and hosted APIs all answer
``POST {base_url}/chat/completions``. Each Request becomes one HTTP request
(``n=1``, the request's own seed), so every sample is cached on its own.

The HTTP client lives on a private event loop in a daemon thread: the sync API and
callers on any event loop share one connection pool and one in-flight bound
(``spec.max_concurrency``), and a sync caller inside a running loop (a notebook)
still works.

``base_url`` may list several endpoints serving the same model: each request goes
to the endpoint with the fewest requests outstanding (``models/endpoints.py``), an
endpoint that fails its health check is ejected and checked again later, and the
fingerprint names the served model, not the URLs, so adding an endpoint keeps the cache.

Retries wait outside the concurrency slot: a request that backs off gives its slot
to the next one. A 400, 413 or 422 refuses one request (a prompt past the context
window, say), not the server: that request's Completion carries ``error`` and the
run goes on. Each attempt, retry, fault and refused request is counted
(``take_events``), and the run cache writes the counts to the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, fingerprint_of
from failforge.models.endpoints import ALIVE, Balancer, Endpoint
from failforge.models.ratelimit import MinuteLimiter, estimate_tokens
from failforge.models.spec import ModelSpec

log = logging.getLogger(__name__)

#: a server that asks for a longer pause than this is waited on for this long
MAX_RETRY_AFTER_S = 120.0
#: answers that refuse one request (too long, malformed), not the server or the key
ITEM_ERRORS = (400, 413, 422)


class _Retryable(Exception):
    """A 429 or 5xx answer, or a 2xx whose body is cut short: worth another attempt,
    after ``retry_after`` seconds if the server said so."""

    def __init__(self, message: str, retry_after: float | None = None, kind: str = "bad answer"):
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind


#: transport failures worth another attempt: timeouts, refused/reset/dropped connections
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Retryable, *_TRANSIENT))


def fault_kind(exc: BaseException) -> str:
    """What went wrong with one attempt, as counted in the store."""
    if isinstance(exc, _Retryable):
        return exc.kind
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection cut"
    if isinstance(exc, httpx.NetworkError):
        return "connection failed"
    return type(exc).__name__


def _chat_choice(data: object) -> dict:
    """The first choice of a chat completion; KeyError/IndexError/TypeError otherwise."""
    choice = data["choices"][0]  # type: ignore[index]
    if not isinstance(choice["message"], dict):
        raise TypeError("message is not an object")
    return choice


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """A short, single-line description of a failed attempt (httpx messages are often empty)."""
    msg = one_line(str(exc))
    if isinstance(exc, _Retryable):
        return msg
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _server_message(resp: httpx.Response) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the raw body."""
    try:
        data = resp.json()
    except ValueError:
        return one_line(resp.text, 200)
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return one_line(str(err), 200)
    return one_line(str(data), 200)


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="failforge-openai", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class OpenAIModel(ChatModel):
    backend = "openai"
    #: CachedModel commits every answer as it arrives; the semaphore bounds what is in flight
    preferred_chunk = 1

    def __init__(
        self,
        spec: ModelSpec,
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        eject_s: float = 10.0,
        eject_cap_s: float = 120.0,
    ):
        if not spec.base_url:
            raise ConfigError("openai backend: 'base_url' is required, e.g. http://127.0.0.1:8000/v1")
        urls = [spec.base_url] if isinstance(spec.base_url, str) else list(spec.base_url)
        for u in urls:
            try:
                url = httpx.URL(u)
            except httpx.InvalidURL as e:
                raise ConfigError(f"openai backend: base_url {u!r} is not a URL: {one_line(str(e))}") from None
            if url.scheme not in ("http", "https") or not url.host:
                raise ConfigError(f"openai backend: base_url {u!r} must start with http:// or https://")
        urls = [u.rstrip("/") for u in urls]
        if len(set(urls)) != len(urls):
            dup = next(u for u in urls if urls.count(u) > 1)
            raise ConfigError(f"openai backend: base_url lists {dup!r} twice")
        self.spec = spec
        self.name = spec.model
        #: the first endpoint (the only one, mostly): what messages and the repr name
        self.base_url = urls[0]
        self.urls = urls
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        # The key goes straight into the client's headers (whose repr masks it) and
        # nowhere else: not in an attribute of its own, errors, logs or the fingerprint.
        headers = {"Accept": "application/json"}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ConfigError(f"api_key_env: environment variable {spec.api_key_env!r} is not set")
            headers["Authorization"] = f"Bearer {key}"
            del key
        n = spec.max_concurrency
        # Neither binds to an event loop until first used, which is on the private loop.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_s),
            limits=httpx.Limits(max_connections=n * len(urls), max_keepalive_connections=n * len(urls)),
        )
        #: max_concurrency requests in flight on each endpoint, each sent where fewest are outstanding
        self._balancer = Balancer(
            [Endpoint(u) for u in urls], n, self._health, eject_s=eject_s, eject_cap_s=eject_cap_s, on_event=self._endpoint_event
        )
        #: the run cache keeps this many requests in flight: twice the slots, so that a
        #: request backing off (it holds no slot) leaves none of them idle
        self.max_in_flight = 2 * n * len(urls)
        self._limiter = MinuteLimiter(spec.max_requests_per_minute, spec.max_tokens_per_minute)
        #: called before a request is first sent, holding its slot; raising stops it (the run's token budget)
        self.gate: Callable[[], None] | None = None
        self._events: Counter[str] = Counter()
        self._events_lock = threading.Lock()
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._fingerprint: str | None = None
        self._closed = False
        self._retry_log_level = logging.WARNING

    def __repr__(self) -> str:
        url = self.base_url if len(self.urls) == 1 else self.urls
        return f"OpenAIModel(base_url={url!r}, model={self.name!r})"

    # --- the private loop and its client ------------------------------------
    def _run(self, coro: Coroutine) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("OpenAIModel is closed")
            if self._runner is None:
                self._runner = _LoopThread()
            return self._runner.submit(coro)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None:  # else the client never opened a connection
            try:
                runner.submit(self._balancer.aclose()).result(timeout=10)
                runner.submit(self._client.aclose()).result(timeout=10)
            except Exception:  # closing must never mask the caller's own error
                log.debug("closing the HTTP client failed", exc_info=True)
            runner.stop()

    # --- counts --------------------------------------------------------------
    def _count(self, event: str, n: int = 1) -> None:
        with self._events_lock:
            self._events[event] += n

    def take_events(self) -> dict[str, int]:
        """Attempts, retries, faults and refused requests counted since the last call."""
        with self._events_lock:
            out, self._events = dict(self._events), Counter()
        return out

    # --- retries -------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_S)
        # full jitter: uniform(0, min(cap, base * 2**attempt))
        return wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_cap_s)(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._count("retries")
        log.log(
            self._retry_log_level,
            "openai backend: %s failed (%s), attempt %d of %d",
            self.base_url if len(self.urls) == 1 else f"{self.spec.model!r} on {len(self.urls)} endpoints",
            describe(exc) if exc else "?", state.attempt_number, self.spec.max_retries + 1,
        )

    async def _send(
        self, method: str, path: str, json: dict | None = None, *, completion: bool = False, endpoint: Endpoint | None = None
    ) -> tuple[httpx.Response, dict | None, float]:
        """One HTTP exchange with bounded retries: the response, its parsed chat
        completion (``completion`` and a 2xx answer, else None) and its latency.

        A completion attempt takes a slot on the endpoint with the fewest requests
        outstanding, and holds it only while it is on the wire: the waits between
        attempts hold none. Other requests go to ``endpoint`` (default: the first).
        """
        estimate = estimate_tokens(len(str(json.get("messages", ""))), int(json.get("max_tokens") or 0)) if json else 0
        first = True
        ep = endpoint or self._balancer.endpoints[0]
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient),
                stop=stop_after_attempt(self.spec.max_retries + 1),
                wait=self._wait,
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    window = await self._limiter.acquire(estimate) if completion else None
                    try:
                        if completion:
                            ep = await self._balancer.acquire()
                        try:
                            if completion and first and self.gate is not None:
                                self.gate()
                            first = False
                            resp, data, latency = await self._attempt(method, ep.url + path, json, completion)
                        finally:
                            if completion:
                                await self._balancer.release(ep)
                    except (_Retryable, *_TRANSIENT) as e:
                        self._count(f"fault: {fault_kind(e)}")
                        if window is not None:
                            window.tokens = 0
                        if completion:  # with several endpoints: is this one down?
                            await self._balancer.failed(ep, busy=isinstance(e, _Retryable) and e.kind == "HTTP 429")
                        raise
                    except BaseException:
                        if window is not None:
                            window.tokens = 0
                        raise
                    if window is not None:
                        usage = (data or {}).get("usage") or {}
                        used = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
                        window.tokens = used or (estimate if data is not None else 0)
        except _TRANSIENT + (_Retryable,) as e:
            self._count("gave up")
            raise ModelUnavailable(
                f"openai backend: {ep.url + path} failed after {self.spec.max_retries + 1} attempts: {describe(e)}"
            ) from None
        except httpx.HTTPError as e:  # not transient: a bad URL, protocol misuse
            raise ModelUnavailable(f"openai backend: {ep.url + path}: {describe(e)}") from None
        return resp, data, latency

    async def _attempt(self, method: str, url: str, json: dict | None, completion: bool) -> tuple[httpx.Response, dict | None, float]:
        """One attempt; raises _Retryable for a 429, a 5xx or a completion body cut short."""
        if completion:
            self._count("requests")  # completion attempts (GET /models is not counted)
        t0 = time.perf_counter()
        resp = await self._client.request(method, url, json=json)
        latency = time.perf_counter() - t0
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(
                f"HTTP {resp.status_code}: {_server_message(resp)}",
                retry_after_seconds(resp.headers.get("retry-after")),
                kind=f"HTTP {resp.status_code}",
            )
        if not completion or resp.status_code >= 400:
            return resp, None, latency
        try:
            data = resp.json()
            _chat_choice(data)
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(
                f"answered with no chat completion: {one_line(resp.text, 200)}", kind="no chat completion"
            ) from None
        return resp, data, latency

    def _rejected(self, url: str, resp: httpx.Response) -> ModelUnavailable:
        hint = ""
        if resp.status_code in (401, 403):
            hint = (
                f" (check the key in ${self.spec.api_key_env})"
                if self.spec.api_key_env
                else " (set api_key_env to the variable that holds the key)"
            )
        return ModelUnavailable(
            f"openai backend: {url} answered HTTP {resp.status_code}: {_server_message(resp)}{hint}"
        )

    # --- model list, fingerprint ---------------------------------------------
    async def _amodels(self, endpoint: Endpoint | None = None, strict: bool = False) -> list[dict] | None:
        """GET /models; None where the server has no such route. ``strict``: an answer
        that is not JSON is an error (a web server that is not a model server)."""
        ep = endpoint or self._balancer.endpoints[0]
        resp, _, _ = await self._send("GET", "/models", endpoint=ep)
        return self._models_of(ep, resp, strict)

    def _models_of(self, ep: Endpoint, resp: httpx.Response, strict: bool) -> list[dict] | None:
        if resp.status_code in (404, 405):
            return None
        if resp.status_code >= 400:
            raise self._rejected(ep.url + "/models", resp)
        try:
            data = resp.json().get("data", [])
        except (ValueError, AttributeError):
            if strict:
                raise ModelUnavailable(
                    f"openai backend: {ep.url}/models answered with something that is not JSON: {one_line(resp.text, 120)}"
                ) from None
            return None
        return [m for m in data if isinstance(m, dict) and "id" in m]

    async def _health(self, ep: Endpoint) -> object:
        """One ``GET /models`` on one endpoint, no retries: raises when it is down, else
        returns what it serves (``ALIVE`` when it is only busy)."""
        resp = await self._client.get(ep.url + "/models", timeout=min(self.spec.timeout_s, 10.0))
        if resp.status_code == 429:
            return ALIVE
        if resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}: {_server_message(resp)}", kind=f"HTTP {resp.status_code}")
        return self._server_model(self._models_of(ep, resp, strict=True))

    def _endpoint_event(self, kind: str, ep: Endpoint, why: str) -> None:
        if kind == "ejected":
            self._count("endpoint ejected")
            log.warning("openai backend: %s failed its health check (%s); its requests go to the other endpoints", ep.url, why)
        elif kind == "retired":
            self._count("endpoint retired")
            log.warning("openai backend: %s %s; it gets no more requests", ep.url, why)
        else:
            log.info("openai backend: %s is back (%s)", ep.url, why)

    async def _aserved(self, strict: bool = False) -> tuple[dict | None, list[dict] | None]:
        """What the endpoints serve (the fingerprint's part) and the model list of one.

        One endpoint: its ``GET /models`` with retries, as always. Several: each is asked
        once, at the same time; those that do not answer are ejected (and checked again
        later), those that answer must serve the same model.
        """
        eps = self._balancer.endpoints
        if len(eps) == 1:
            models = await self._amodels(eps[0], strict=strict)
            served = self._server_model(models)
        else:

            async def ask(ep: Endpoint) -> list[dict] | None:
                resp = await self._client.get(ep.url + "/models", timeout=min(self.spec.timeout_s, 10.0))
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Retryable(f"HTTP {resp.status_code}: {_server_message(resp)}", kind=f"HTTP {resp.status_code}")
                return self._models_of(ep, resp, strict)

            answers = await asyncio.gather(*(ask(ep) for ep in eps), return_exceptions=True)
            up = [(ep, a) for ep, a in zip(eps, answers) if not isinstance(a, BaseException)]
            if not up:
                # none answered at once: the first with its retries gives the usual error (or answers late)
                models = await self._amodels(eps[0], strict=strict)
                up = [(eps[0], models)]
            served_by = {ep.url: self._server_model(a) for ep, a in up}
            if len({repr(v) for v in served_by.values()}) > 1:
                shown = "; ".join(f"{u} serves {v}" for u, v in served_by.items())
                raise ModelUnavailable(f"openai backend: the endpoints of {self.spec.model!r} serve different models: {shown}")
            models, served = up[0][1], served_by[up[0][0].url]
            for ep, a in zip(eps, answers):
                if isinstance(a, BaseException):
                    if isinstance(a, ModelUnavailable):
                        raise a  # an endpoint that answers but refuses (a wrong key, HTML): a config error
                    self._balancer.eject(ep, describe(a))
        self._balancer.expected = served
        return served, models

    def probe(self) -> list[str]:
        """Pre-flight check: the server answers; returns the model ids it lists ([] if it lists none).

        Raises ModelUnavailable (one line) when it cannot be reached or rejects the key.
        With several endpoints, one that answers is enough (the others are ejected and
        checked again later); all that answer must serve the same model.
        """
        # retries stay out of the terminal here: pre-flight ends in one line either way
        self._retry_log_level = logging.DEBUG
        _, models = self._run(self._aserved(strict=True)).result()
        if models is None and not self.base_url.endswith("/v1"):
            log.warning("openai backend: %s has no /models route; most servers want base_url to end in /v1", self.base_url)
        return [m["id"] for m in models or []]

    def _server_model(self, models: list[dict] | None) -> dict | None:
        if not models:
            return None
        match = [m for m in models if m.get("id") == self.spec.model]
        if not match and len(models) == 1:  # single-model servers answer whatever name is sent
            match = models
        if not match:
            return None
        # only what identifies the weights: "created" changes with every server restart
        return {k: match[0].get(k) for k in ("id", "root", "parent", "owned_by") if match[0].get(k) is not None}

    @property
    def fingerprint(self) -> str:
        # the served model, not the URLs: adding or moving an endpoint keeps every cached answer
        if self._fingerprint is None:
            served, _ = self._run(self._aserved()).result()
            self._fingerprint = fingerprint_of(
                backend=self.backend,
                server_model=served,
                model=self.spec.model,
                chat_template=self.spec.chat_template,
            )
        return self._fingerprint

    # --- completions ------------------------------------------------------
    def _body(self, r: Request) -> dict[str, Any]:
        p = r.params
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [m.model_dump() for m in r.messages],
            "n": 1,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": r.seed,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.logprobs:
            # llama.cpp's python server returns none unless top_logprobs is truthy
            body["logprobs"] = True
            body["top_logprobs"] = 1
        if self.spec.chat_template:
            # vLLM and llama.cpp's server accept a per-request template; others ignore the field
            body["chat_template"] = self.spec.chat_template
        return body

    async def _one(self, r: Request) -> Completion:
        resp, data, latency = await self._send("POST", "/chat/completions", self._body(r), completion=True)
        url = str(resp.request.url)  # the endpoint that answered
        if resp.status_code in ITEM_ERRORS:
            # this request is refused, not the server: the caller records the error and goes on
            error = f"HTTP {resp.status_code}: {_server_message(resp)}"
            self._count(f"refused: HTTP {resp.status_code}")
            log.warning("openai backend: %s refused one request (%s); it is recorded as an error", url, error)
            return Completion(text="", finish_reason="error", error=error, latency_s=latency, sample_index=r.sample_index)
        if resp.status_code >= 400:
            raise self._rejected(url, resp)
        assert data is not None  # a 2xx completion answer is parsed by _attempt
        choice = _chat_choice(data)
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        logprobs = None
        if r.params.logprobs:
            content = (choice.get("logprobs") or {}).get("content") or []
            logprobs = [float(t["logprob"]) for t in content if isinstance(t, dict) and "logprob" in t]
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
            sample_index=r.sample_index,
            logprobs=logprobs,
        )

    async def _all(self, requests: list[Request]) -> list[Completion]:
        # a TaskGroup cancels the requests still in flight as soon as one fails for good
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(r)) for r in requests]
        except BaseExceptionGroup as group:
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [t.result() for t in tasks]

    def _complete(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        return self._run(self._all(requests)).result()

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        return await asyncio.wrap_future(self._run(self._all(requests)))
