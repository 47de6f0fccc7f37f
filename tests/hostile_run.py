"""A finished ReverseGen-style run directory whose failures hold given model text, for
checking that reports and exports show such text as text."""

from __future__ import annotations

import os
from pathlib import Path

from failforge.run import records as rec
from failforge.run.store import RunStore

CONFIG_YAML = """method: reversegen
task: math
proposer: {backend: llamacpp, model: smollm2-135m-instruct}
target: {backend: llamacpp, model: smollm2-135m-instruct}
judge: {kind: math}
iterations: 1
"""


def build_hostile_run(run_dir: Path, texts: list[str]) -> Path:
    """One iteration with one failed attempt per text: the instruction and the target's
    answer both carry it, and the judge's reason quotes it."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    (run_dir / "run.log").write_text("", encoding="utf-8")
    store = RunStore(run_dir / "store.sqlite")
    try:
        fp = "a1b2c3d4e5f60718"
        store.set_meta(
            method="reversegen",
            task="math",
            name=run_dir.name,
            status="finished",
            pid=os.getpid(),
            started_at=1_760_000_000.0,
            finished_at=1_760_000_060.0,
            models={r: {"spec": {"backend": "llamacpp", "model": "smollm2-135m-instruct"}, "fingerprint": fp} for r in ("proposer", "target")},
        )
        prov = rec.Provenance(method="reversegen", task="math", iteration=1, proposer_fingerprint=fp, target_fingerprint=fp, judge="math@2", calls=2, tokens=40)
        attempts = [
            rec.AttemptRecord(
                id=f"a{i}",
                instruction=f"What is 7 + 5? {text}",
                responses=[f"The answer is {text}"],
                label="fail",
                score=1.0,
                reason=f"{text[:40]} != 12 (exact)",
                provenance=prov,
            )
            for i, text in enumerate(texts)
        ]
        rec.put(store, attempts, iteration=1)
        store.put_metrics(1, {"failure_rate": 1.0, "calls": 2 * len(texts), "unscorable": 0})
    finally:
        store.close()
    return run_dir
