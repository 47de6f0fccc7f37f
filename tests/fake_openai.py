"""A tiny OpenAI-compatible HTTP server on 127.0.0.1, in a thread, for tests of run
plumbing (locks, pinned inputs, bad servers) that need a model but not its answers.

``mode`` "ok" answers ``GET /v1/models`` and ``POST /v1/chat/completions`` with JSON
(the answer echoes the prompt); "html" answers every request with a 200 HTML page,
like a web server that is not a model server; "down" answers every request 503 (a
server that is up but broken). ``calls`` counts completions answered, ``posts`` every
completion request received, ``gets`` every model list asked, ``max_in_flight`` the
most completions it held at once. ``model_id`` is the id it lists.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, mode: str = "ok", answer_bytes: int = 0, delay_s: float = 0.0, model_id: str = "fake"):
        self.mode = mode
        self.model_id = model_id
        self.posts = 0
        self.gets = 0
        self.in_flight = 0
        self.max_in_flight = 0
        #: seconds each completion waits before it answers (keeps a run busy)
        self.delay_s = delay_s
        #: pad every answer to this many bytes (a huge answer)
        self.answer_bytes = answer_bytes
        self.calls = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with server._lock:
                    server.gets += 1
                if server.mode == "down":
                    return self._send(503, b'{"error": {"message": "down"}}', "application/json")
                if server.mode == "html":
                    return self._send(200, b"<html><body>It works!</body></html>", "text/html")
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, json.dumps({"data": [{"id": server.model_id, "owned_by": "test"}]}).encode(), "application/json")
                self._send(404, b'{"error": "not found"}', "application/json")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.posts += 1
                if server.mode == "down":
                    return self._send(503, b'{"error": {"message": "down"}}', "application/json")
                if server.mode == "html":
                    return self._send(200, b"<html><body>It works!</body></html>", "text/html")
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                with server._lock:
                    server.calls += 1
                prompt = body["messages"][-1]["content"]
                text = f"answer to: {prompt}"
                if server.answer_bytes:
                    text = (text + " ") + "x" * max(0, server.answer_bytes - len(text) - 1)
                data = {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())},
                }
                self._send(200, json.dumps(data).encode(), "application/json")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
