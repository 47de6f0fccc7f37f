"""The replica pool's own logic, without a cluster: dispatch to the least-loaded
replica within the cap, re-sending a lost replica's requests, and a replica's batcher
handing back each answer as its backend finishes it. Ray's part (actors, placement,
a real kill) is in tests/test_ray.py."""

from __future__ import annotations

import asyncio
import types

import pytest

from failforge.errors import ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, SamplingParams, as_conversation
from failforge.models.raypool import RayModel, Replica


class ActorDiedError(Exception):
    pass


class RayActorError(Exception):
    pass


class RayTaskError(Exception):
    def __init__(self, cause):
        self.cause = cause


FAKE_RAY = types.SimpleNamespace(
    exceptions=types.SimpleNamespace(ActorDiedError=ActorDiedError, RayActorError=RayActorError, RayTaskError=RayTaskError)
)


class FakeActor:
    """An actor handle: ``complete.remote(r)`` is awaitable, answers after a short wait."""

    def __init__(self, name: str, delay: float = 0.01):
        self.name, self.delay, self.dead, self.seen = name, delay, False, []
        self.complete = types.SimpleNamespace(remote=self._remote)

    def _remote(self, request):
        async def answer():
            self.seen.append(request)
            await asyncio.sleep(self.delay)
            if self.dead:
                raise ActorDiedError(f"{self.name} died")
            return Completion(text=f"{self.name}:{request.messages[0].content}", sample_index=request.sample_index)

        return answer()


def pool(actors: list[FakeActor], cap: int) -> RayModel:
    import threading
    from collections import Counter, deque

    m = RayModel.__new__(RayModel)
    m._ray, m.name, m.cap = FAKE_RAY, "fake", cap
    m._actors, m._lock = actors, threading.Lock()
    m._in_flight, m._alive = [0] * len(actors), [True] * len(actors)
    m._waiters, m._events, m.answered = deque(), Counter(), 0
    return m


def reqs(n: int) -> list[Request]:
    return [Request(messages=tuple(as_conversation(f"q{i}")), params=SamplingParams(max_tokens=4)) for i in range(n)]


def test_least_loaded_within_the_cap_and_every_answer_in_order():
    actors = [FakeActor("a"), FakeActor("b")]
    m = pool(actors, cap=3)
    peak: list[int] = []
    pick = m._pick

    def watched():
        peak.append(max(m._in_flight))
        return pick()

    m._pick = watched
    outs = asyncio.run(asyncio.wait_for(m.acomplete(reqs(20)), 10))
    assert [o.text.split(":")[1] for o in outs] == [f"q{i}" for i in range(20)]
    assert max(peak) <= 3  # never above the cap
    assert abs(len(actors[0].seen) - len(actors[1].seen)) <= 3  # both replicas share the work
    assert m.take_events() == {"requests": 20} and m._in_flight == [0, 0]


def test_a_lost_replica_s_requests_go_to_the_other_and_nothing_is_asked_twice_once_answered():
    a, b = FakeActor("a", delay=0.05), FakeActor("b", delay=0.01)
    m = pool([a, b], cap=2)

    async def go():
        task = asyncio.ensure_future(m.acomplete(reqs(10)))
        await asyncio.sleep(0.02)
        a.dead = True  # a dies holding its requests
        return await asyncio.wait_for(task, 10)

    outs = asyncio.run(go())
    assert len(outs) == 10 and all(o.text.startswith("b:") for o in outs)  # a answered none
    events = m.take_events()
    assert events["fault: replica lost"] == 1 and events["retries"] == 2 and events["requests"] == 10
    assert m.live_replicas == 1


def test_all_replicas_lost_is_one_line():
    a = FakeActor("a")
    a.dead = True
    m = pool([a], cap=2)
    with pytest.raises(ModelUnavailable, match="all 1 replicas of 'fake' are lost"):
        asyncio.run(asyncio.wait_for(m.acomplete(reqs(3)), 10))


def test_a_model_error_in_a_replica_comes_back_as_itself():
    from failforge.errors import ConfigError

    class Failing(FakeActor):
        def _remote(self, request):
            async def fail():
                raise RayTaskError(ConfigError("prompt longer than the context"))

            return fail()

    m = pool([Failing("a")], cap=2)
    with pytest.raises(ConfigError, match="prompt longer"):
        asyncio.run(asyncio.wait_for(m.acomplete(reqs(2)), 10))
    assert m._in_flight == [0]


class StreamingModel(ChatModel):
    """Answers a batch one request at a time, in reverse order, as a stream."""

    backend = "fake"
    name = "fake"
    batches: list[int]

    def __init__(self):
        self.batches = []

    @property
    def fingerprint(self) -> str:
        return "fp"

    def _complete(self, requests):
        return [Completion(text=r.messages[0].content.upper(), sample_index=r.sample_index) for r in requests]

    def _stream(self, requests, chunk_size):
        self.batches.append(len(requests))
        for i in reversed(range(len(requests))):
            yield [(i, Completion(text=requests[i].messages[0].content.upper()))]


def test_a_replica_batches_what_arrived_and_hands_back_each_answer():
    rep = Replica.__new__(Replica)
    rep.model, rep.native_async, rep.batch_size = StreamingModel(), False, 4
    from collections import deque

    rep._pending, rep._worker = deque(), None

    async def go():
        return await asyncio.wait_for(asyncio.gather(*(rep.complete(r) for r in reqs(10))), 10)

    outs = asyncio.run(go())
    assert [o.text for o in outs] == [f"Q{i}" for i in range(10)]
    assert sum(rep.model.batches) == 10 and max(rep.model.batches) <= 4


def test_a_replica_that_cannot_load_reports_why_in_one_line():
    from failforge.models.spec import ModelSpec

    rep = Replica(ModelSpec(backend="llamacpp", model="/nowhere/model.gguf").model_dump_json())
    info = asyncio.run(rep.info())
    assert info == {"error": info["error"]} and "/nowhere/model.gguf" in info["error"] and "\n" not in info["error"]
    rep.close()


def test_classifier_replicas_that_disagree_on_the_version_are_refused():
    from failforge.errors import ModelUnavailable
    from failforge.models.raypool import same_on_every_replica

    same = {"name": "profanity", "version": "v1", "reads_pairs": False}
    assert same_on_every_replica("pool", [same, dict(same)], "version", "the classifier's version") == "v1"
    with pytest.raises(ModelUnavailable, match=r"^pool: replicas disagree on the classifier's version \(replica 0: v1, replica 1: v2\)$"):
        same_on_every_replica("pool", [same, same | {"version": "v2"}], "version", "the classifier's version")
