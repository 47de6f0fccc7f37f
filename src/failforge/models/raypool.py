"""Backend "ray": a pool of model replicas in Ray Core actors.

``{backend: ray, replicas: N, cpus_per_replica: C, gpus_per_replica: G, inner: SPEC}``
starts N actors; each runs the ordinary ``load_model(inner)``, so a llama.cpp,
transformers, OpenAI or vLLM model is served from many processes or machines and the
methods do not change. The process that runs the job (the driver) keeps the run store
and the cache and is their only writer: this class is a ``ChatModel`` like any other,
and the run wraps it in its cache.

- Placement: each replica gets a placement group of its own (one bundle of C CPUs and
  G GPUs; for vLLM with ``tensor_parallel_size`` T > 1, T bundles of one GPU each,
  STRICT_PACK, so the tensor-parallel workers share a node). A pool the cluster cannot
  place within ``placement_timeout_s`` is refused in one line naming the resource
  that is short; nothing waits forever.
- Identity: every replica reports its model's fingerprint, and they must all agree
  before any request is sent (a node with other weights at the same path is refused).
  The pool's fingerprint is that of its inner model, so the cache keys are those of
  the same model run in one process: a run can move between the two without asking
  any model twice.
- Dispatch: each request goes on its own to the live replica with the fewest requests
  in flight, at most ``max_in_flight_per_replica`` each. Every request carries its own
  seed, so which replica answers it does not change the answer (vLLM is not
  bit-reproducible: there the store, not regeneration, is the truth).
- Loss: when a replica dies, the requests it held are sent to another replica;
  answers already returned (and committed by the cache) are never asked again.

Ray is an optional extra (``pip install 'failforge[ray]'``), imported when a pool is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failforge.errors import ConfigError, ModelUnavailable
from failforge.models.base import ChatModel, Completion, Request, run_sync
from failforge.models.spec import ModelSpec

log = logging.getLogger("failforge.ray")

MISSING_EXTRA = "backend 'ray' needs the optional extra: pip install 'failforge[ray]'"
#: requests a lost replica's work may be re-sent, per request, before the pool gives up
MAX_RESENDS = 8
#: vLLM schedules hundreds of sequences itself: keep that many in flight on it
VLLM_IN_FLIGHT = 256


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ModelUnavailable(MISSING_EXTRA) from None
    return ray


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:400]


def tensor_parallel(inner: ModelSpec) -> int:
    """Tensor-parallel degree of a vLLM replica (1 for every other backend)."""
    if inner.backend != "vllm":
        return 1
    return int(inner.engine_args.get("tensor_parallel_size", 1) or 1)


def bundles_for(spec: ModelSpec) -> tuple[list[dict[str, float]], str]:
    """The placement-group bundles of one replica, and their strategy."""
    inner = spec.inner
    tp = tensor_parallel(inner)
    if tp > 1:
        if spec.gpus_per_replica not in (0, tp):
            raise ConfigError(
                f"gpus_per_replica: {spec.gpus_per_replica:g} differs from the inner tensor_parallel_size {tp}"
                " (a tensor-parallel replica takes one GPU per rank)"
            )
        # bundle 0 also holds the engine actor's CPUs; every bundle holds one rank's GPU
        first = {"CPU": spec.cpus_per_replica, "GPU": 1.0, **spec.ray_resources}
        return [first] + [{"GPU": 1.0} for _ in range(tp - 1)], "STRICT_PACK"
    bundle = {"CPU": spec.cpus_per_replica, **spec.ray_resources}
    if spec.gpus_per_replica:
        bundle["GPU"] = spec.gpus_per_replica
    return [bundle], "PACK"


def replica_spec(spec: ModelSpec) -> ModelSpec:
    """What a replica loads: the inner spec, with llama.cpp threads fitted to its CPUs and
    relative paths made absolute (a replica's working folder is not the driver's)."""
    inner = spec.inner
    update: dict[str, Any] = {}
    if inner.backend == "llamacpp" and inner.n_threads is None:
        # n_threads does not change the answers (not in the fingerprint), only the speed
        update["n_threads"] = max(1, int(spec.cpus_per_replica))
    for field in ("model", "adapter"):
        value = getattr(inner, field)
        if value and not Path(value).is_absolute() and Path(value).expanduser().exists():
            update[field] = str(Path(value).expanduser().resolve())
    return inner.model_copy(update=update) if update else inner


# --- the actor ------------------------------------------------------------------------


class Replica:
    """One model replica inside a Ray actor (an async actor: many calls at once).

    Backends that decode a batch together (llama.cpp, transformers) get the requests
    that arrived while the previous batch ran as the next batch, and each answer goes
    back the moment the backend finishes it; natively async ones (vLLM's async engine,
    an OpenAI client) get each request as it comes.
    """

    def __init__(self, spec_json: str):
        spec = ModelSpec.model_validate_json(spec_json)
        #: why the model did not load: reported by ``info`` in one line (an exception
        #: raised here would reach the driver as Ray's "actor died" with a traceback)
        self.error: str | None = None
        self.model: ChatModel | None = None
        try:
            if spec.backend == "vllm":
                from failforge.models.raypool_vllm import AsyncVLLMModel

                self.model = AsyncVLLMModel(spec)
            else:
                from failforge.models.factory import load_model

                self.model = load_model(spec)
        except Exception as e:  # noqa: BLE001 - every load failure is reported the same way
            self.error = _one_line(e) or type(e).__name__
            return
        self.native_async = type(self.model)._acomplete is not ChatModel._acomplete
        self.batch_size = max(1, int(getattr(self.model, "batch_size", None) or spec.batch_size))
        self._pending: deque = deque()
        self._worker: asyncio.Task | None = None

    async def info(self) -> dict[str, Any]:
        if self.error is None:
            start = getattr(self.model, "start", None)
            if start is not None:  # an engine that starts in the actor's event loop (vLLM's async engine)
                try:
                    await start()
                except Exception as e:  # noqa: BLE001
                    self.error = _one_line(e) or type(e).__name__
        if self.error is not None:
            return {"error": self.error}
        import ray

        return {
            "fingerprint": self.model.fingerprint,
            "name": self.model.name,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "batch_size": self.batch_size,
        }

    async def complete(self, request: Request) -> Completion:
        if self.native_async:
            return (await self.model.acomplete([request]))[0]
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if len(self._pending) < self.batch_size:
                await asyncio.sleep(0.002)  # let the requests sent together arrive together
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]

            def run(batch=batch) -> None:
                # each answer goes back the moment the backend finishes it (ChatModel.stream)
                for group in self.model.stream([r for r, _ in batch]):
                    for i, c in group:
                        loop.call_soon_threadsafe(_settle, batch[i][1], c)

            try:
                await asyncio.to_thread(run)
            except BaseException as e:  # the requests of the batch still waiting get the error
                loop.call_soon(_fail_all, [fut for _, fut in batch], e)  # after the answers already queued
            else:
                missing = RuntimeError(f"backend {self.model.backend} gave no answer to a request of its batch")
                loop.call_soon(_fail_all, [fut for _, fut in batch], missing)  # none, unless the backend is wrong

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


# --- the driver side ------------------------------------------------------------------


def _connect(ray, address: str | None) -> None:
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        # A cluster for this process alone: no token file written to ~/.ray, no dashboard.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except Exception as e:  # ConnectionError, auth errors, a stale address file
        raise ModelUnavailable(f"ray: could not join the cluster at {address!r}: {_one_line(e)}") from None


class RayModel(ChatModel):
    backend = "ray"
    #: the actor class each replica runs
    replica_class = Replica

    def __init__(self, spec: ModelSpec):
        if spec.inner is None:
            raise ConfigError("backend 'ray' needs inner: the spec every replica loads")
        ray = _import_ray()
        self._ray = ray
        self.spec = spec
        self.name = spec.inner.model
        self._bundles, self._strategy = bundles_for(spec)
        tp = tensor_parallel(spec.inner)
        if spec.max_in_flight_per_replica:
            self.cap = spec.max_in_flight_per_replica
        elif spec.inner.backend == "vllm":
            self.cap = VLLM_IN_FLIGHT
        elif spec.inner.backend == "openai":
            self.cap = spec.inner.max_concurrency
        else:
            self.cap = 2 * spec.inner.batch_size
        self.preferred_chunk = spec.inner.batch_size
        self.max_in_flight = self.cap * spec.replicas
        self._pgs: list = []
        self._actors: list = []
        self._lock = threading.Lock()
        self._in_flight = [0] * spec.replicas
        self._alive = [True] * spec.replicas
        self._waiters: deque = deque()
        self._events: Counter = Counter()
        #: requests this pool has answered since it started
        self.answered = 0
        self.infos: list[dict[str, Any]] = []
        _connect(ray, spec.ray_address)
        try:
            self._place()
            self._start(tp)
        except BaseException:
            self.close()
            raise

    # --- start-up ---------------------------------------------------------------------
    def _need(self) -> dict[str, float]:
        need: Counter = Counter()
        for b in self._bundles:
            for k, v in b.items():
                need[k] += v * self.spec.replicas
        return dict(need)

    def _place(self) -> None:
        from ray.util.placement_group import placement_group

        ray, spec = self._ray, self.spec
        self._pgs = [placement_group(self._bundles, strategy=self._strategy) for _ in range(spec.replicas)]
        ready, _ = ray.wait([pg.ready() for pg in self._pgs], num_returns=len(self._pgs), timeout=spec.placement_timeout_s)
        if len(ready) == len(self._pgs):
            return
        raise ModelUnavailable(self._short_of(len(ready)))

    def _short_of(self, placed: int) -> str:
        """One line: which resource the pool could not get."""
        ray, spec = self._ray, self.spec
        total, free = ray.cluster_resources(), ray.available_resources()
        need = self._need()
        head = (
            f"ray pool of {spec.replicas} x {spec.inner.backend}:{spec.inner.model}: "
            f"{placed} of {spec.replicas} replicas placed in {spec.placement_timeout_s:g}s"
        )
        for res, amount in sorted(need.items()):
            have = total.get(res, 0.0)
            if have < amount:
                return f"{head}; needs {res} {amount:g}, the cluster has {have:g}"
        for res, amount in sorted(need.items()):
            if free.get(res, 0.0) < amount:
                return f"{head}; needs {res} {amount:g}, {free.get(res, 0.0):g} of {total.get(res, 0.0):g} free (held by others)"
        per = ", ".join(f"{k} {v:g}" for k, v in self._bundles[0].items())
        return f"{head}; no single node has a bundle of {per} free"

    def replica_spec(self, index: int) -> ModelSpec:
        """The spec replica ``index`` loads (the same for all)."""
        return replica_spec(self.spec)

    def _start(self, tp: int) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray, spec = self._ray, self.spec
        remote = ray.remote(self.replica_class)
        bundle = self._bundles[0]
        for i, pg in enumerate(self._pgs):
            inner = self.replica_spec(i)
            options: dict[str, Any] = {
                "num_cpus": bundle["CPU"],
                "resources": dict(spec.ray_resources),
                # a tensor-parallel engine holds no GPU itself: its workers take one bundle each
                "num_gpus": 0 if tp > 1 else bundle.get("GPU", 0),
                "max_restarts": 0,
                "max_concurrency": self.cap + 4,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=tp > 1
                ),
            }
            self._actors.append(remote.options(**options).remote(inner.model_dump_json()))
        self.infos = replica_infos(
            ray, self._actors, spec.load_timeout_s, "ray pool", "its model",
            lambda: f"did not load {spec.inner.model!r} within load_timeout_s={spec.load_timeout_s:g}s",
        )
        self._fingerprint = same_on_every_replica(
            "ray pool", self.infos, "fingerprint", "the model fingerprint", "; every replica must load the same weights"
        )
        log.info("ray pool of %d x %s ready (fingerprint %s)", len(self.infos), spec.inner.model, self._fingerprint)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def live_replicas(self) -> int:
        return sum(self._alive)

    def in_flight(self, index: int) -> int:
        """Requests replica ``index`` holds now."""
        return self._in_flight[index]

    def actor(self, index: int):
        """The actor handle of replica ``index``."""
        return self._actors[index]

    # --- slots ----------------------------------------------------------------------
    def _pick(self) -> int | None:
        best = None
        for i, alive in enumerate(self._alive):
            if alive and self._in_flight[i] < self.cap and (best is None or self._in_flight[i] < self._in_flight[best]):
                best = i
        return best

    async def _acquire(self) -> int:
        loop = asyncio.get_running_loop()
        with self._lock:
            if not any(self._alive):
                raise ModelUnavailable(f"ray pool: all {len(self._alive)} replicas of {self.name!r} are lost")
            i = self._pick()
            if i is not None:
                self._in_flight[i] += 1
                return i
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        return await fut

    def _release(self, i: int) -> None:
        with self._lock:
            self._in_flight[i] -= 1
            self._serve_waiters()

    def _serve_waiters(self) -> None:
        """Hand free slots to waiting requests (called holding the lock)."""
        while self._waiters:
            if not any(self._alive):
                err = ModelUnavailable(f"ray pool: all {len(self._alive)} replicas of {self.name!r} are lost")
                while self._waiters:
                    loop, fut = self._waiters.popleft()
                    try:
                        loop.call_soon_threadsafe(_fail, fut, err)
                    except RuntimeError:  # its event loop is closed
                        pass
                return
            j = self._pick()
            if j is None:
                return
            loop, fut = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(self._hand, fut, j)
            except RuntimeError:  # the waiter's event loop is closed: nobody waits there any more
                continue
            self._in_flight[j] += 1

    def _hand(self, fut: asyncio.Future, j: int) -> None:
        if fut.done():  # the waiter was cancelled: give the slot back
            self._release(j)
        else:
            fut.set_result(j)

    def _lost(self, i: int, e: BaseException) -> None:
        with self._lock:
            if self._alive[i]:
                self._alive[i] = False
                self._events["fault: replica lost"] += 1
                log.warning("ray pool: replica %d of %s is lost (%s); its requests go to the others", i, self.name, _one_line(e))
            self._serve_waiters()

    # --- requests -------------------------------------------------------------------
    async def _one(self, request: Request) -> Completion:
        ray = self._ray
        for _ in range(MAX_RESENDS + 1):
            i = await self._acquire()
            try:
                out = await self._actors[i].complete.remote(request)
            except ray.exceptions.ActorDiedError as e:
                self._lost(i, e)
                self._events["retries"] += 1
                continue
            except ray.exceptions.RayActorError as e:  # unreachable for now (a node's network): try another
                self._events["retries"] += 1
                log.warning("ray pool: replica %d of %s did not answer (%s); sending elsewhere", i, self.name, _one_line(e))
                continue
            except ray.exceptions.RayTaskError as e:  # the model itself raised: the same error here
                raise (e.cause if isinstance(e.cause, BaseException) else e) from None
            finally:
                self._release(i)
            with self._lock:
                self._events["requests"] += 1
                self.answered += 1
            return out
        raise ModelUnavailable(f"ray pool: a request of {self.name!r} was lost {MAX_RESENDS + 1} times; giving up")

    async def _acomplete(self, requests: list[Request]) -> list[Completion]:
        results = await asyncio.gather(*(self._one(r) for r in requests), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return results  # type: ignore[return-value]

    def _complete(self, requests: list[Request]) -> list[Completion]:
        return run_sync(self._acomplete(requests))

    def take_events(self) -> dict[str, int]:
        """Counts since the last call, under the names the report's "Model servers" table
        reads: requests answered, ``retries`` (requests re-sent because their replica was
        lost or unreachable) and ``fault: replica lost``."""
        with self._lock:
            out, self._events = dict(self._events), Counter()
        return out

    def close(self) -> None:
        ray = self._ray
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors = []
        from ray.util.placement_group import remove_placement_group

        for pg in self._pgs:
            try:
                remove_placement_group(pg)
            except Exception:
                pass
        self._pgs = []


def replica_infos(ray, actors: list, timeout_s: float, head: str, what: str, timed_out: Callable[[], str]) -> list[dict[str, Any]]:
    """Every replica's ``info()``, all within one deadline (model and classifier pools).

    A replica that does not answer in time (``timed_out()`` says why), dies, or reports
    that it could not load ``what`` ends start-up in one line.
    """
    refs = [a.info.remote() for a in actors]
    deadline = time.monotonic() + timeout_s
    infos = []
    for i, ref in enumerate(refs):
        try:
            infos.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
        except ray.exceptions.GetTimeoutError:
            raise ModelUnavailable(f"{head}: replica {i} {timed_out()}") from None
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e
            raise ModelUnavailable(f"{head}: replica {i} could not load {what}: {_one_line(cause)}") from None
    for i, info in enumerate(infos):
        if "error" in info:
            raise ModelUnavailable(f"{head}: replica {i} could not load {what}: {info['error']}")
    return infos


def same_on_every_replica(head: str, infos: list[dict[str, Any]], key: str, what: str, advice: str = "") -> Any:
    """``info[key]`` of the replicas, which must all agree (so any replica may answer any request)."""
    values = [info[key] for info in infos]
    if len(set(values)) > 1:
        shown = ", ".join(f"replica {i}: {v}" for i, v in enumerate(values))
        raise ModelUnavailable(f"{head}: replicas disagree on {what} ({shown}){advice}")
    return values[0]


def _settle(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail_all(futs: list[asyncio.Future], err: BaseException) -> None:
    for fut in futs:
        _fail(fut, err)


def _fail(fut: asyncio.Future, err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)



def check_pool(role: str, spec: ModelSpec, check_model) -> None:
    """Before a run starts: Ray is installed, and the inner model checks out where this
    machine can see its weights: always for a local cluster; on a cluster they may live
    on the nodes alone, and then a replica reports a missing file when the pool starts."""
    import importlib.util
    from pathlib import Path

    from failforge.models.registry import KNOWN_MODELS

    if importlib.util.find_spec("ray") is None:
        raise ModelUnavailable(f"{role}: {MISSING_EXTRA}")
    inner = spec.inner
    if inner.backend == "vllm":  # the driver needs no vLLM; the replicas do
        return
    local = (spec.ray_address or os.environ.get("RAY_ADDRESS") or "local") == "local"  # this machine's files
    if local or inner.backend == "openai" or inner.model in KNOWN_MODELS or Path(inner.model).expanduser().exists():
        check_model(role, inner)
