"""Replica pools on a real local Ray cluster (backend "ray").

The cluster runs in a process group of its own (a small holder process that calls
``ray.init(address="local", num_cpus=2)``), so teardown kills every Ray helper with
that group, also the ones that ignore SIGTERM after a driver was SIGKILLed. The tests
and the `failforge` commands they start join it by its address. Every wait has a
timeout. Marked ``ray``: `pytest -m "not ray"` leaves them out, and they are skipped
where Ray is not installed (`pip install 'failforge[ray]'`).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

HOLDER = """
import sys, ray
ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
"""

#: environment of everything that joins the test cluster
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


class LocalCluster:
    """A local Ray cluster in its own process group."""

    def __init__(self, log_path: Path, num_cpus: int = 2, start_timeout: float = 120):
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER.replace("num_cpus=2", f"num_cpus={num_cpus}")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            start_new_session=True, env={**os.environ, **RAY_ENV},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the local Ray cluster did not start within {start_timeout}s (see {log_path})")
        self.address = line

    def stop(self) -> None:
        pgid = self.proc.pid  # start_new_session: the holder leads its own group
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, OSError):
            pass
        for sig, pause in ((signal.SIGTERM, 3), (signal.SIGKILL, 0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(pause)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("ray") / "cluster.log")
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- helpers ----------------------------------------------------------------------------


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **RAY_ENV},
    )


def pool_spec(address: str, **over) -> dict:
    inner = {"backend": "llamacpp", "n_threads": 1, "batch_size": 4, **over.pop("inner", {})}
    return {"backend": "ray", "replicas": 2, "cpus_per_replica": 0.5, "ray_address": address, "inner": inner, **over}


def flow(spec: dict) -> str:
    return json.dumps(spec)  # YAML reads JSON


def calls_in(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(cond, timeout: float, what: str, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- the scenarios ----------------------------------------------------------------------

REVERSEGEN = """
method: reversegen
task: math
task_options: {{reference: solver}}
seed: 11
proposer: {proposer}
target: {target}
judge: {{kind: math, model: {judge}}}
seeds: {{dataset: arithmetic, heldout: 3}}
iterations: 1
prompts_per_iteration: 3
samples_per_prompt: 2
proposer_max_tokens: 32
target_max_tokens: 32
embedding_metrics: false
train: {{warmup: null, proposer: null, target: null}}
"""


def test_reversegen_iteration_on_two_replicas_equals_one_process(cluster, tmp_path):
    """Proposer, target and the judge's reference model each on two llama.cpp replicas."""
    from failforge.run.store import RunStore

    local = {"backend": "llamacpp", "n_threads": 1, "batch_size": 4}
    pool = pool_spec(cluster.address, cpus_per_replica=0.3)  # three pools of two on two CPUs
    runs = {}
    for name, spec in (("local", local), ("ray", pool)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(REVERSEGEN.format(proposer=flow(spec), target=flow(spec), judge=flow(spec)))
        proc = cli("run", str(cfg), "--run-dir", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr[-3000:]
        store = RunStore(tmp_path / name / "store.sqlite", readonly=True)
        runs[name] = (store.records("attempt"), store.call_totals(), store.meta())
        store.close()
    (local_rows, local_calls, _), (ray_rows, ray_calls, ray_meta) = runs["local"], runs["ray"]
    assert local_rows and ray_rows == local_rows  # the same instructions, answers, labels, fingerprints
    assert ray_calls["calls"] == local_calls["calls"]
    events = ray_meta["backend_events"]
    # every call went through the pools: all three roles, both replicas' answers in one store
    assert sum(events[role]["requests"] for role in ("proposer", "target", "judge")) == ray_calls["calls"]


def test_a_lost_replica_loses_nothing_and_each_request_is_stored_once(cluster, tmp_path):
    from failforge.models import load_model
    from failforge.models.base import SamplingParams
    from failforge.models.spec import ModelSpec
    from failforge.run.cached import CachedModel
    from failforge.run.store import RunStore

    spec = ModelSpec.model_validate(pool_spec(cluster.address, inner={"batch_size": 2}))
    pool = load_model(spec)
    store = RunStore(tmp_path / "store.sqlite")
    model = CachedModel(pool, store, label="target")
    prompts = [f"Count from {i} to {i + 5}." for i in range(16)]
    params = SamplingParams(max_tokens=24, temperature=0.8, seed=5)
    out: dict = {}

    def work():
        try:
            out["answers"] = model.generate(prompts, params)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    import threading

    t = threading.Thread(target=work)
    t.start()
    # kill replica 0 while it holds requests, after the pool has answered some
    wait_for(lambda: pool.answered >= 2 and pool.in_flight(0) > 0, 120, "a first answer")
    ray.kill(pool.actor(0), no_restart=True)
    t.join(timeout=180)
    assert not t.is_alive(), "the run did not finish after a replica was lost"
    assert "error" not in out, out.get("error")
    answers = out["answers"]
    assert len(answers) == 16 and all(a[0].text for a in answers)
    assert model.sent == 16 and calls_in(tmp_path / "store.sqlite") == 16  # each request stored once
    from collections import Counter

    events = Counter(store.meta()["backend_events"]["target"]) + Counter(pool.take_events())  # filed with each commit
    assert events["fault: replica lost"] == 1 and events["retries"] >= 1 and events["requests"] == 16
    assert pool.live_replicas == 1
    # the answers are those one process gives: each request carries its own seed
    single = load_model(ModelSpec.model_validate({"backend": "llamacpp", "n_threads": 1, "batch_size": 4}))
    try:
        assert [a[0].text for a in single.generate(prompts, params)] == [a[0].text for a in answers]
    finally:
        single.close()
    model.close()
    store.close()
    # the pool's placement groups are gone: the CPUs are free again
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the pool's CPUs to come back")


def test_a_killed_driver_resumes_and_sends_only_the_missing_requests(cluster, tmp_path):
    spec = pool_spec(cluster.address, inner={"batch_size": 2})
    cfg = tmp_path / "answer.yaml"
    cfg.write_text(f"method: answer\nlimit: 12\nmodel: {flow(spec)}\nsampling: {{max_tokens: 32}}\n")
    run_dir = tmp_path / "run"
    db = run_dir / "store.sqlite"
    driver = subprocess.Popen(
        [sys.executable, "-c", "from failforge.cli import main; main()", "-q", "run", str(cfg), "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **RAY_ENV},
    )
    try:
        wait_for(lambda: calls_in(db) >= 2 or driver.poll() is not None, 120, "the first answers", every=0.02)
    finally:
        driver.kill()  # SIGKILL
        driver.wait(timeout=30)
    before = calls_in(db)
    assert 0 < before < 12, f"{before} answers were stored before the kill"
    again = cli("resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"sent_this_process: {12 - before}" in again.stdout  # only the missing ones
    assert calls_in(db) == 12


def test_replicas_that_disagree_on_the_fingerprint_or_cannot_load_are_refused(cluster, monkeypatch):
    from failforge.errors import ModelUnavailable
    from failforge.models import load_model
    from failforge.models.raypool import RayModel
    from failforge.models.spec import ModelSpec

    original = RayModel.replica_spec

    def other_template_on_replica_1(self, index):
        spec = original(self, index)
        # as if one node held other weights at the same path
        return spec.model_copy(update={"chat_template": "{{ messages[0].content }}"}) if index == 1 else spec

    monkeypatch.setattr(RayModel, "replica_spec", other_template_on_replica_1)
    with pytest.raises(ModelUnavailable) as e:
        load_model(ModelSpec.model_validate(pool_spec(cluster.address)))
    msg = str(e.value)
    assert "disagree on the model fingerprint" in msg and "\n" not in msg
    monkeypatch.undo()
    # a replica that cannot load its model (a file missing on its node): its reason, in one line
    with pytest.raises(ModelUnavailable) as e:
        load_model(ModelSpec.model_validate(pool_spec(cluster.address, inner={"model": "/nowhere/model.gguf"})))
    msg = str(e.value)
    assert msg.startswith("ray pool: replica 0 could not load its model: model '/nowhere/model.gguf'") and "\n" not in msg
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the refused pool's CPUs to come back")


def test_an_unsatisfiable_placement_times_out_in_one_line(cluster, tmp_path):
    spec = pool_spec(cluster.address, gpus_per_replica=1, placement_timeout_s=2)
    cfg = tmp_path / "answer.yaml"
    cfg.write_text(f"method: answer\nlimit: 2\nmodel: {flow(spec)}\n")
    t = time.monotonic()
    proc = cli("run", str(cfg), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs GPU 2, the cluster has 0" in lines[0], proc.stderr
    assert time.monotonic() - t < 60
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the CPUs to come back")


def test_concurrent_calls_share_the_pool_least_loaded_first(cluster):
    from failforge.models import load_model
    from failforge.models.base import Request, SamplingParams, as_conversation
    from failforge.models.spec import ModelSpec

    pool = load_model(ModelSpec.model_validate(pool_spec(cluster.address, max_in_flight_per_replica=3)))
    try:
        reqs = [
            Request(messages=tuple(as_conversation(f"Say {i}.")), params=SamplingParams(max_tokens=8, seed=i))
            for i in range(12)
        ]
        seen: list[int] = []
        original = pool._pick

        def pick():
            i = original()
            if i is not None:
                seen.append(pool._in_flight[i])
                assert pool._in_flight[i] < 3  # the cap per replica
            return i

        pool._pick = pick

        async def both():  # two callers at once on one event loop, as the streaming cache does
            return await asyncio.wait_for(asyncio.gather(pool.acomplete(reqs[:6]), pool.acomplete(reqs[6:])), 120)

        a, b = asyncio.run(both())
        assert len(a) == len(b) == 6 and all(c.completion_tokens for c in a + b)
        assert pool.take_events()["requests"] == 12
        assert max(seen) <= 2
    finally:
        pool.close()


# --- classifier judges as replicas ----------------------------------------------------------


def _texts(n: int) -> list[str]:
    words = ["you are a damn fool", "what a lovely day", "shut the hell up", "thanks for the help", "this is crap", "see you soon"]
    return [f"{words[i % len(words)]} number {i}" for i in range(n)]


def test_a_classifier_judge_on_two_replicas_judges_as_one_process(cluster):
    from failforge.judges.base import JudgeInput
    from failforge.judges.registry import JudgeSpec, build_judge

    items = [JudgeInput(instruction="Say something.", responses=[t]) for t in _texts(300)] + [
        JudgeInput(instruction="Say something.", responses=["   "])  # nothing to classify: unscorable, not sent
    ]
    local = build_judge(JudgeSpec(kind="classifier", classifier="profanity"))
    pooled = build_judge(JudgeSpec(kind="classifier", classifier="profanity", replicas=2, cpus_per_replica=0.5, ray_address=cluster.address))
    try:
        assert pooled.classifier.live_replicas == 2
        # the same id and version: verdicts a run cached in one process are the pool's too
        assert (pooled.id, pooled.version) == (local.id, local.version)
        a, b = local.judge(items), pooled.judge(items)
        assert [(v.label, v.score) for v in a] == [(v.label, v.score) for v in b]
        assert {v.label for v in b} == {"fail", "pass", "unscorable"}
        assert pooled.classifier.answered == 5  # 300 texts in chunks of 64, over both replicas
    finally:
        pooled.classifier.close()
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the classifier pool's CPUs to come back")


def test_a_lost_classifier_replica_loses_no_text(cluster):
    import threading

    from failforge.judges.classifier import ProfanityClassifier
    from failforge.judges.classifier_pool import ClassifierPool

    texts = _texts(3000)
    pool = ClassifierPool("profanity", replicas=2, cpus_per_replica=0.5, ray_address=cluster.address, chunk=1)
    out: dict = {}

    def work():
        try:
            out["probs"] = pool.predict_proba(texts)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=work)
    try:
        t.start()
        wait_for(lambda: pool.answered >= 20, 60, "the first chunks", every=0.005)
        ray.kill(pool.actor(0), no_restart=True)
        t.join(timeout=120)
        assert not t.is_alive() and "error" not in out, out.get("error")
        assert pool.live_replicas == 1 and pool.resent >= 1
        assert out["probs"] == ProfanityClassifier().predict_proba(texts)
    finally:
        pool.close()
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the classifier pool's CPUs to come back")


def test_a_classifier_pool_that_cannot_start_says_why_in_one_line(cluster):
    from failforge.errors import ModelUnavailable
    from failforge.judges.classifier_pool import ClassifierPool

    with pytest.raises(ModelUnavailable) as e:
        ClassifierPool("profanity", replicas=8, cpus_per_replica=1, ray_address=cluster.address)
    assert str(e.value) == "classifier pool of 8 x profanity: needs CPU 8, the cluster has 2"
    with pytest.raises(ModelUnavailable) as e:
        ClassifierPool("/nowhere/judge", replicas=2, cpus_per_replica=0.5, ray_address=cluster.address)
    msg = str(e.value)
    assert msg.startswith("classifier pool of 2 x /nowhere/judge: replica 0 could not load the classifier: ") and "\n" not in msg
    assert "no such folder" in msg
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 30, "the refused pool's CPUs to come back")
