"""The backend call log: every answer a backend returns is one line, cached answers none."""

from __future__ import annotations

import asyncio

from failforge.models.base import SamplingParams
from failforge.run.cached import CachedModel
from failforge.run.calllog import attach_call_log, read_call_log
from failforge.run.store import RunStore
from fakes import EchoModel


def test_call_log_counts_backend_answers_not_cache_hits(tmp_path):
    log = tmp_path / "calls.jsonl"
    model = attach_call_log(EchoModel(), log, "target")
    cached = CachedModel(model, RunStore(tmp_path / "s.sqlite"))
    p = SamplingParams(n=2, max_tokens=8)
    cached.generate(["a", "b"], p)
    cached.generate(["a", "b", "c"], p)  # a and b are cache hits
    asyncio.run(cached.agenerate(["d"], p))
    lines = read_call_log(log)
    assert len(lines) == 8 and {x["role"] for x in lines} == {"target"}
    assert len({x["key"] for x in lines}) == 8
    with open(log, "a") as f:
        f.write('{"role": "tar')  # a line torn by a kill is left out
    assert len(read_call_log(log)) == 8
