"""An audit log of the requests that reached a backend: one JSON line per answer.

Set ``FAILFORGE_CALL_LOG=FILE`` and every model a run loads appends
``{"role", "key"}`` to FILE for each answer its backend returns, before the run
store commits it. The store's cache rows say what was kept; this log says what was
computed, so a key that appears twice is work done twice (for example an answer
that was in flight when the process was killed). ``bench/soak.py`` reads it.

Lines are written with one ``write`` on a file opened for appending, so a killed
process leaves whole lines behind (POSIX appends of a few hundred bytes land whole).
"""

from __future__ import annotations

import json
import os
from typing import Any

from failforge.models.base import ChatModel, Completion, Request

ENV = "FAILFORGE_CALL_LOG"


def attach_call_log(model: ChatModel, path: str | os.PathLike, role: str) -> ChatModel:
    """Wrap ``model``'s public entry points (``complete``, ``acomplete``, ``stream``) so
    each answer they return is logged; the backend itself is untouched."""
    fp = model.fingerprint

    def write(pairs: list[tuple[Request, Completion]]) -> None:
        if not pairs:
            return
        blob = "".join(json.dumps({"role": role, "key": r.key(fp)}) + "\n" for r, _ in pairs)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, blob.encode())
        finally:
            os.close(fd)

    complete, acomplete = model.complete, model.acomplete

    def logged_complete(requests: list[Request]) -> list[Completion]:
        requests = list(requests)
        out = complete(requests)
        write(list(zip(requests, out)))
        return out

    async def logged_acomplete(requests: list[Request]) -> list[Completion]:
        requests = list(requests)
        out = await acomplete(requests)
        write(list(zip(requests, out)))
        return out

    model.complete = logged_complete  # type: ignore[method-assign]
    model.acomplete = logged_acomplete  # type: ignore[method-assign]
    stream = getattr(model, "stream", None)
    if stream is not None:

        def logged_stream(requests: list[Request], *args: Any, **kwargs: Any):
            requests = list(requests)
            for group in stream(requests, *args, **kwargs):
                write([(requests[i], c) for i, c in group])
                yield group

        model.stream = logged_stream  # type: ignore[method-assign]
    return model


def read_call_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The log's lines (a torn last line, from a kill mid-write, is left out)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
