"""Classifier judges as replicas on Ray: the same classifier in N actors.

A classifier judge (``kind: classifier``) with ``replicas`` set loads its classifier
in that many Ray actors instead of in the run's process; ``ClassifierPool`` is a
``TextClassifier`` like the others, so ``ClassifierJudge`` and every method use it
unchanged. The driver:

- joins the cluster the model pools join (``ray_address``, else ``RAY_ADDRESS``, else
  a local cluster for the process), checks up front that the cluster has the CPUs
  the replicas ask for (one line naming the shortfall, not a hang), and waits for each
  replica to load within ``load_timeout_s``;
- refuses replicas that disagree on the classifier's version (every replica must
  give the same probabilities, so any may classify any text);
- cuts the texts into chunks and hands each to the replica with the fewest chunks in
  flight (at most ``IN_FLIGHT`` each), so a batch keeps every replica busy;
- re-sends the chunks of a lost replica to the others, and gives up in one line when
  none is left.

The judge's id and version are the in-process classifier's, so verdicts cached by a
run are the same with and without replicas. Model pools (``backend: ray``) are the
other half: ``models/raypool.py``. The actor here is synchronous: a classifier scores
a chunk in one forward pass, and one chunk at a time per replica keeps its CPUs busy.
"""

from __future__ import annotations

import logging
from typing import Any

from failforge.errors import ModelUnavailable
from failforge.judges.classifier import Text, TextClassifier
from failforge.models.raypool import _connect, _import_ray, _one_line, replica_infos, same_on_every_replica

log = logging.getLogger("failforge.ray")

#: chunks handed to one replica at once (one running, one waiting: no idle gap between them)
IN_FLIGHT = 2
#: times one chunk may be re-sent after losing its replica before the pool gives up
MAX_RESENDS = 8


class ClassifierReplica:
    """One classifier inside a Ray actor. A load error is reported by ``info`` in one
    line (raised here, it would reach the driver as Ray's "actor died" with a traceback)."""

    def __init__(self, source: str, positive_label: str | None):
        self.error: str | None = None
        self.clf: TextClassifier | None = None
        try:
            from failforge.judges.registry import load_classifier

            self.clf = load_classifier(source, positive_label)[0]
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            self.error = " ".join(str(e).split()) or type(e).__name__

    def info(self) -> dict[str, Any]:
        if self.clf is None:
            return {"error": self.error}
        return {"name": self.clf.name, "version": self.clf.version, "reads_pairs": self.clf.reads_pairs}

    def predict_proba(self, texts: list[Text]) -> list[float]:
        assert self.clf is not None
        return self.clf.predict_proba(texts)


class ClassifierPool(TextClassifier):
    """``replicas`` copies of the classifier ``source`` names, on Ray actors."""

    def __init__(
        self,
        source: str,
        positive_label: str | None = None,
        *,
        replicas: int = 2,
        cpus_per_replica: float = 1.0,
        ray_address: str | None = None,
        chunk: int = 64,
        load_timeout_s: float = 600.0,
        replica_class: type = ClassifierReplica,
    ):

        self._ray = ray = _import_ray()
        self.source = source
        self.replicas = replicas
        self.cpus = cpus_per_replica
        self.chunk = chunk
        self._actors: list = []
        self._alive: list[bool] = []
        #: chunks re-sent after their replica was lost, and chunks scored, since the pool started
        self.resent = 0
        self.answered = 0
        _connect(ray, ray_address)
        self._check_room()
        try:
            self._start(replica_class, positive_label, load_timeout_s)
        except BaseException:
            self.close()
            raise

    # --- start-up -------------------------------------------------------------------------
    def _head(self) -> str:
        return f"classifier pool of {self.replicas} x {self.source}"

    def _check_room(self) -> None:
        need = self.replicas * self.cpus
        have = self._ray.cluster_resources().get("CPU", 0.0)
        if have < need:
            raise ModelUnavailable(f"{self._head()}: needs CPU {need:g}, the cluster has {have:g}")

    def _start(self, replica_class: type, positive_label: str | None, timeout: float) -> None:
        ray = self._ray
        remote = ray.remote(replica_class).options(num_cpus=self.cpus, max_restarts=0)
        self._actors = [remote.remote(self.source, positive_label) for _ in range(self.replicas)]
        self._alive = [True] * self.replicas
        infos = replica_infos(
            ray, self._actors, timeout, self._head(), "the classifier",
            lambda: (
                f"did not start and load within load_timeout_s={timeout:g}s "
                f"(each needs CPU {self.cpus:g}; {ray.available_resources().get('CPU', 0.0):g} free now)"
            ),
        )
        same_on_every_replica(self._head(), infos, "version", "the classifier's version")
        self.name, self.version, self.reads_pairs = infos[0]["name"], infos[0]["version"], infos[0]["reads_pairs"]
        log.info("%s ready (version %s)", self._head(), self.version)

    # --- work -----------------------------------------------------------------------------
    @property
    def live_replicas(self) -> int:
        return sum(self._alive)

    def actor(self, i: int):
        return self._actors[i]

    def predict_proba(self, texts: list[Text]) -> list[float]:
        if not texts:
            return []
        ray = self._ray
        chunks = [list(range(s, min(s + self.chunk, len(texts)))) for s in range(0, len(texts), self.chunk)]
        todo = list(range(len(chunks)))
        resends = [0] * len(chunks)
        out: list[float | None] = [None] * len(texts)
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (chunk, replica)
        load = [0] * len(self._actors)
        while todo or running:
            while todo:
                free = [i for i, ok in enumerate(self._alive) if ok and load[i] < IN_FLIGHT]
                if not free:
                    break
                i = min(free, key=lambda j: load[j])
                c = todo.pop(0)
                running[self._actors[i].predict_proba.remote([texts[k] for k in chunks[c]])] = (c, i)
                load[i] += 1
            if not running:
                raise ModelUnavailable(f"{self._head()}: every replica was lost")
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            c, i = running.pop(ref)
            load[i] -= 1
            try:
                probs = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                self._lost(i, e)
                resends[c] += 1
                if resends[c] > MAX_RESENDS:
                    raise ModelUnavailable(f"{self._head()}: a chunk lost its replica {resends[c]} times") from None
                self.resent += 1
                todo.insert(0, c)
                continue
            except ray.exceptions.RayTaskError as e:  # the classifier's own error: not a lost replica
                raise RuntimeError(f"{self._head()}: {_one_line(e.cause or e)}") from None
            if len(probs) != len(chunks[c]):
                raise RuntimeError(f"{self._head()}: replica {i} gave {len(probs)} probabilities for {len(chunks[c])} texts")
            for k, p in zip(chunks[c], probs):
                out[k] = p
            self.answered += 1
        return out  # type: ignore[return-value]

    def _lost(self, i: int, e: BaseException) -> None:
        if self._alive[i]:
            self._alive[i] = False
            log.warning("%s: replica %d lost (%s); its chunks go to the others", self._head(), i, _one_line(e))

    def close(self) -> None:
        for a in self._actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        self._alive = []
