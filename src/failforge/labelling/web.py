"""Labelling in a browser: a small Starlette app served by uvicorn on 127.0.0.1.

- ``make_app(store, token)``: the page and its JSON API, every path under
  ``/<token>/``; any other request (no token, a wrong one, a foreign Host header) gets
  403. Every response carries a strict Content-Security-Policy (scripts, styles and
  fetches from the page's own origin only; no inline script) and the page sets
  prompt text with ``textContent``, so markup in a prompt is shown as text.
- ``LabelServer``: binds a free port (or a given one) on a loopback address, serves
  the app in the foreground (``failforge label``) or in a thread (``serve=True``).
- ``WebLabeller``: writes the label requests, then polls the store until every item
  has a label; the page is served by ``failforge label RUN_DIR`` in another process,
  or by this process with ``serve=True``.

The page shows the items of every labeller call that still waits for a label, one
at a time, starting at the first unlabelled one; each label is POSTed and committed
at once, so a reload (or a restarted server) resumes where labelling stopped.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from failforge.errors import FailforgeError
from failforge.labelling.base import LabelItem, Labeller, give_label, label_records, labels, open_requests
from failforge.run.store import RunStore

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_ASSETS = {"": ("page.html", "text/html; charset=utf-8"), "page.js": ("page.js", "text/javascript; charset=utf-8"),
           "page.css": ("page.css", "text/css; charset=utf-8")}  # fmt: skip


def _need_server_libs() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise FailforgeError(f"the labelling page needs starlette and uvicorn ({e.name} is missing): pip install starlette uvicorn") from e


def loopback_host(host: str) -> str:
    """The address to bind: a loopback address only (``localhost`` means 127.0.0.1)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None or ip.version != 4 or not ip.is_loopback:
        raise FailforgeError(f"--host {host}: the labelling page is served on a loopback address only (127.0.0.1)")
    return host


# --- the app ------------------------------------------------------------------------------


def page_state(store: RunStore, shown: set[str] | None = None) -> dict[str, Any]:
    """What the page shows: the items of the calls waiting for labels, and of the calls
    in ``shown`` (those this server showed before: a finished call stays "n of n"), in
    order, each with its label or null. ``shown`` is updated with the calls returned."""
    reqs = open_requests(store, also=frozenset(shown or ()))
    if shown is not None:
        shown.update(r.batch for r in reqs)
    given = label_records(store)
    items = []
    for r in reqs:
        rec = given.get(r.id)
        label = rec.label if rec is not None and rec.label in r.choices else None
        items.append({"id": r.id, "text": r.text, "guess": r.guess, "round": r.round, "choices": r.choices, "label": label})
    return {"items": items, "done": sum(i["label"] is not None for i in items), "total": len(items)}


def undo_last(store: RunStore, labeller: str, shown: set[str] | None = None) -> str | None:
    """Clear the most recently given label among the page's items; returns its id."""
    given = label_records(store)
    reqs = open_requests(store, also=frozenset(shown or ()))
    done = [given[r.id] for r in reqs if r.id in given and given[r.id].label in r.choices]
    if not done:
        return None
    last = max(done, key=lambda rec: rec.given_at)
    give_label(store, last, None, labeller)
    return last.id


def make_app(store: RunStore, token: str, labeller: str = "web", hosts: frozenset[str] = frozenset({"127.0.0.1", "localhost"})):
    """The Starlette app: ``/<token>/`` (page), ``page.js``, ``page.css``, ``api/state``,
    POST ``api/label`` ``{"id", "label"}`` and POST ``api/undo``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import MutableHeaders
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    shown: set[str] = set()  # calls this server has shown: they stay on the page once done
    package = resources.files("failforge.labelling")
    assets = {name: (package.joinpath(f).read_bytes(), ctype) for name, (f, ctype) in _ASSETS.items()}

    def asset(name: str):
        body, ctype = assets[name]
        return lambda request: Response(body, media_type=ctype)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def json_body(request: Request) -> dict[str, Any] | None:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return None
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(page_state, store, shown))

    async def give(request: Request) -> JSONResponse:
        body = await json_body(request)
        if body is None or not isinstance(body.get("id"), str) or not isinstance(body.get("label"), str):
            return error(400, 'send JSON {"id": ..., "label": ...}')

        def write() -> JSONResponse:
            req = next((r for r in open_requests(store, also=frozenset(shown)) if r.id == body["id"]), None)
            if req is None:
                return error(404, f"item {body['id']!r} is not waiting for a label")
            if body["label"] not in req.choices:
                return error(400, f"label {body['label']!r} is not one of {req.choices}")
            shown.add(req.batch)
            give_label(store, req, body["label"], labeller)
            return JSONResponse(page_state(store, shown))

        return await run_in_threadpool(write)

    async def undo(request: Request) -> JSONResponse:
        if await json_body(request) is None:
            return error(400, "send JSON {}")

        def write() -> JSONResponse:
            undone = undo_last(store, labeller, shown)
            return JSONResponse({**page_state(store, shown), "undone": undone})

        return await run_in_threadpool(write)

    prefix = f"/{token}"
    app = Starlette(
        routes=[
            *(Route(f"{prefix}/{name}", asset(name), methods=["GET"]) for name in assets),
            Route(f"{prefix}/api/state", state, methods=["GET"]),
            Route(f"{prefix}/api/label", give, methods=["POST"]),
            Route(f"{prefix}/api/undo", undo, methods=["POST"]),
        ]
    )
    forbidden = PlainTextResponse("forbidden", status_code=403)
    expected = token.encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "lifespan":
            return await app(scope, receive, send)
        if scope["type"] != "http":  # no websockets
            return
        first = scope["path"].lstrip("/").split("/", 1)[0].encode()
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").rsplit(":", 1)[0]

        async def send_secure(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers[k] = v
            await send(message)

        if not secrets.compare_digest(first, expected) or host not in hosts:
            return await forbidden(scope, receive, send_secure)
        return await app(scope, receive, send_secure)

    return guarded


# --- the server -----------------------------------------------------------------------------


class LabelServer:
    """The labelling app on ``host``:``port`` (0 = a free port), with a fresh token."""

    def __init__(self, store: RunStore, host: str = "127.0.0.1", port: int = 0, labeller: str = "web"):
        _need_server_libs()
        self.store = store
        self.host = loopback_host(host)
        self.token = secrets.token_urlsafe(24)
        self.labeller = labeller
        self._sock = _listen(self.host, port)
        self.port = self._sock.getsockname()[1]
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/{self.token}/"

    def _make_server(self):
        import uvicorn

        app = make_app(self.store, self.token, self.labeller, hosts=frozenset({self.host, "localhost"}))
        # log_config=None: leave the caller's logging alone
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        return self._server

    def start(self, timeout_s: float = 15.0) -> LabelServer:
        """Serve in a background thread; returns once the server accepts connections."""
        server = self._make_server()
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._sock]}, name="failforge-label-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise FailforgeError(f"the labelling server on {self.host}:{self.port} did not start")
            time.sleep(0.02)
        return self

    def serve(self, stop_when: Callable[[], bool] | None = None, check_s: float = 1.0, linger_s: float = 2.0) -> None:
        """Serve in this thread until Ctrl-C, or until ``stop_when()`` has held for ``linger_s``."""
        server = self._make_server()
        done = threading.Event()
        if stop_when is not None:

            def watch() -> None:
                since: float | None = None
                while not done.wait(check_s):
                    if not server.started:
                        continue
                    if stop_when():
                        since = since or time.monotonic()
                        if time.monotonic() - since >= linger_s:
                            server.should_exit = True
                            return
                    else:
                        since = None

            threading.Thread(target=watch, name="failforge-label-watch", daemon=True).start()
        try:
            server.run(sockets=[self._sock])
        finally:
            done.set()
            self._sock.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> LabelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise FailforgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


# --- the labeller ------------------------------------------------------------------------------


def _stderr_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)


class WebLabeller(Labeller):
    """Waits for labels given on the labelling page.

    ``serve=False``: the page is served by ``failforge label RUN_DIR`` (another process);
    ``serve=True``: this process serves it and logs the URL. Either way the store is
    polled every ``poll_s`` until every item has a label (or ``timeout_s`` passes:
    then the labels given so far are returned)."""

    name = "web"

    def __init__(
        self,
        serve: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        log: Callable[[str], None] | None = None,
        name: str = "web",
    ):
        self.serve = serve
        self.host = loopback_host(host)
        self.port = port
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._log = log or _stderr_log
        self.name = name
        #: the URL of the page while this labeller serves it (serve=True)
        self.url: str | None = None

    def _label(self, store: RunStore, items: list[LabelItem], choices: list[str], already: int) -> None:
        server = None
        if self.serve:
            server = LabelServer(store, self.host, self.port, labeller=self.name).start()
            self.url = server.url
            self._log(f"waiting for {len(items)} labels: open {server.url}")
        else:
            self._log(f"waiting for {len(items)} labels: run `failforge label {store.path.parent}` and open the URL it prints")
        t0 = time.monotonic()
        last = -1
        try:
            while True:
                got = labels(store)
                left = sum(got.get(i.id) not in choices for i in items)
                if left == 0:
                    self._log(f"all {already + len(items)} items labelled")
                    return
                if left != last and last != -1:
                    self._log(f"{already + len(items) - left} of {already + len(items)} labelled")
                last = left
                if self.timeout_s is not None and time.monotonic() - t0 >= self.timeout_s:
                    self._log(f"stopped waiting after {self.timeout_s:g}s: {left} items still without a label")
                    return
                time.sleep(self.poll_s)
        finally:
            if server is not None:
                server.stop()
                self.url = None
