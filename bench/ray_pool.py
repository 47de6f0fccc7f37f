"""Replica pools on Ray: what dispatch costs, and what replicas buy.

(a) overhead: requests through a ``RayModel`` whose replicas answer at once (no
    model), so the time is the pool's own: one actor call per request, least-loaded
    choice, the cap per replica. Reported as microseconds per request.
(b) throughput: the same llama.cpp prompts answered by one process and by a pool of
    ``--replicas`` llama.cpp replicas on a local Ray cluster, the two alternating
    round by round (a busy machine slows both alike); the best round of each.
    Greedy, so both give the same tokens.

Needs the ``ray`` extra (``pip install 'failforge[ray]'``). It starts a local cluster
of ``--cpus`` CPUs in a process group of its own and kills that group at the end.

    .venv/bin/python bench/ray_pool.py --requests 2000 --prompts 16 --max-tokens 48 --replicas 2 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


class InstantReplica:
    """A replica that answers at once: what is left is the pool's own cost."""

    def __init__(self, spec_json: str):
        pass

    async def info(self):
        return {"fingerprint": "instant", "name": "instant", "pid": os.getpid(), "node": "", "batch_size": 1}

    async def complete(self, request):
        from failforge.models.base import Completion

        return Completion(text="ok", completion_tokens=1, sample_index=request.sample_index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests for the overhead measurement")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import ray
    from test_ray import RAY_ENV, LocalCluster
    from throughput import prompts

    from failforge.models import load_model
    from failforge.models.base import Request, SamplingParams, as_conversation
    from failforge.models.raypool import RayModel
    from failforge.models.spec import ModelSpec

    t0 = time.perf_counter()
    cluster = LocalCluster(Path(os.environ.get("TMPDIR", "/tmp")) / "failforge-bench-ray.log", num_cpus=args.cpus)
    os.environ.update(RAY_ENV)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"local cluster up in {time.perf_counter() - t0:.1f}s")
        pool_spec = {
            "backend": "ray", "replicas": args.replicas, "cpus_per_replica": args.cpus / args.replicas,
            "inner": {"backend": "llamacpp", "n_threads": max(1, args.cpus // args.replicas), "batch_size": args.batch_size},
        }

        # (a) the pool's own cost per request
        class Instant(RayModel):
            replica_class = InstantReplica

        pool = Instant(ModelSpec.model_validate({**pool_spec, "max_in_flight_per_replica": 64}))
        reqs = [Request(messages=tuple(as_conversation(f"q{i}")), params=SamplingParams(max_tokens=1)) for i in range(args.requests)]
        pool.complete(reqs[:100])  # warm
        t = time.perf_counter()
        pool.complete(reqs)
        dt = time.perf_counter() - t
        pool.close()
        print(f"(a) dispatch: {args.requests} requests in {dt:.2f}s = {dt / args.requests * 1e6:.0f} us per request "
              f"({args.requests / dt:.0f} requests/s) over {args.replicas} instant replicas")

        # (b) one process vs a pool
        texts = prompts(args.prompts)
        params = SamplingParams(max_tokens=args.max_tokens)
        reqs = [Request(messages=tuple(as_conversation(p)), params=params) for p in texts]
        single = load_model(ModelSpec.model_validate({"backend": "llamacpp", "n_threads": args.cpus, "batch_size": args.batch_size}))
        pool = load_model(ModelSpec.model_validate(pool_spec))
        best: dict[str, float] = {}
        texts_seen: dict[str, list[str]] = {}
        for r in range(args.rounds):
            for name, model in (("one process", single), (f"{args.replicas} replicas", pool)):
                t = time.perf_counter()
                outs = model.complete(reqs)
                dt = time.perf_counter() - t
                tps = sum(c.completion_tokens for c in outs) / dt
                best[name] = max(best.get(name, 0.0), tps)
                texts_seen[name] = [c.text for c in outs]
                print(f"    round {r + 1}: {name}: {tps:.1f} tokens/s ({dt:.1f}s)")
        pool.close()
        single.close()
        names = list(best)
        same = texts_seen[names[0]] == texts_seen[names[1]]
        print(f"(b) best of {args.rounds}: " + ", ".join(f"{n} {v:.1f} tokens/s" for n, v in best.items())
              + f"; ratio {best[names[1]] / best[names[0]]:.2f}; same greedy texts: {same}")
    finally:
        ray.shutdown()
        cluster.stop()


if __name__ == "__main__":
    main()
