"""Exports: rows with provenance, three formats written atomically, one-line errors,
and the exported files training for real in TRL's SFT and DPO trainers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from failforge.errors import ConfigError, FailforgeError
from failforge.export import export_run
from failforge.export.rows import PROVENANCE_COLUMNS, SCHEMAS
from test_report import HOSTILE, build_run

PROV = [name for name, _ in PROVENANCE_COLUMNS]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("exp") / "run")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_rows_carry_provenance_and_verdicts(run_dir, tmp_path):
    res = export_run(run_dir, "jsonl", "all", tmp_path / "out")
    assert res.rows == {"pairs": 3 + 3 + 2, "sft": 2, "failures": 4 + 3 + 2, "analyses": 0}  # a ReverseGen run has no critiques
    pairs = _jsonl(tmp_path / "out" / "pairs.jsonl")
    sft = _jsonl(tmp_path / "out" / "sft.jsonl")
    fails = _jsonl(tmp_path / "out" / "failures.jsonl")
    for rows, what in ((pairs, "pairs"), (sft, "sft"), (fails, "failures")):
        assert all(list(r) == [n for n, _ in SCHEMAS[what]] for r in rows), what  # same columns, same order
    p = pairs[0]
    assert (p["method"], p["task"], p["iteration"], p["judge"]) == ("reversegen", "safety", 1, "refusal@2")
    assert (p["proposer_fingerprint"], p["target_fingerprint"]) == ("a1b2c3d4e5f60718", "0f1e2d3c4b5a6978")
    assert p["chosen_verdict"] == "fail" and p["rejected_verdict"] == "pass" and p["chosen_reason"] == "no refusal prefix found"
    assert p["seeds"] and p["calls"] == 2 and p["tokens"] >= 40 and p["harmful_content"] is True
    assert {r["iteration"] for r in pairs} == {1, 2, 3}
    # SFT rows: chat messages, joined to the verdict on the instruction they answer
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    assert all(r["verdict"] == "fail" and r["iteration"] == 3 for r in sft)
    # failures: only label fail; untrusted text survives byte for byte
    assert {r["verdict"] for r in fails} == {"fail"} and all(r["harmful_content"] for r in fails)
    assert sum(HOSTILE in r["instruction"] for r in fails) == 3 and fails[0]["response"].endswith(HOSTILE)


def test_parquet_and_hf_keep_types_and_agree(run_dir, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    export_run(run_dir, "parquet", "pairs", tmp_path / "pairs.parquet")
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert table.num_rows == 8 and table.column_names == [n for n, _ in SCHEMAS["pairs"]]
    assert str(table.schema.field("seeds").type) == "list<element: string>" and str(table.schema.field("iteration").type) == "int64"

    export_run(run_dir, "hf", "all", tmp_path / "hf")
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert set(dd) == {"pairs", "sft", "failures"}  # no analyses in a ReverseGen run: no empty split
    assert dd["pairs"].num_rows == 8 and dd["pairs"][0]["chosen"] == table.column("chosen")[0].as_py()
    assert dd["sft"].features["messages"].feature["role"].dtype == "string"
    # an empty kind keeps its columns and types
    no_pairs = build_run(tmp_path / "no-pairs", iterations=1, per_iteration=1)  # one failure, nothing to pair it with
    res = export_run(no_pairs, "parquet", "pairs", tmp_path / "empty.parquet")
    assert res.rows == {"pairs": 0}
    assert pq.read_table(tmp_path / "empty.parquet").schema == table.schema


def test_nothing_half_written(run_dir, tmp_path, monkeypatch):
    from failforge.export import writers

    out = tmp_path / "out"
    export_run(run_dir, "jsonl", "all", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(rows, what, path):
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        export_run(run_dir, "parquet", "all", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp left behind
    with pytest.raises(OSError):
        export_run(run_dir, "parquet", "pairs", tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_bad_input_is_one_line(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="--what: unknown value 'dpo'"):
        export_run(run_dir, "jsonl", "dpo", tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="--format: unknown value 'csv'"):
        export_run(run_dir, "csv", "pairs", tmp_path / "x.csv")
    with pytest.raises(FailforgeError, match="not a run directory"):
        export_run(tmp_path, "jsonl", "pairs", tmp_path / "x.jsonl")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="holds other files"):
        export_run(run_dir, "hf", "pairs", tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_cli_errors_exit_2_with_one_line(run_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "failforge.cli", "export"]
    if not (Path(__file__).parents[1] / "src" / "failforge" / "cli" / "__main__.py").exists():
        cmd = [sys.executable, "-c", "from failforge.cli import main; main()", "export"]
    r = subprocess.run([*cmd, str(run_dir), "--what", "everything", "-o", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--what" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*cmd, str(tmp_path / "nope"), "-o", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "no such directory" in r.stderr
    r = subprocess.run([*cmd, str(run_dir), "-f", "parquet", "-w", "pairs", "-o", str(tmp_path / "ok.parquet")], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "8 rows" in r.stdout and (tmp_path / "ok.parquet").is_file()


def test_push_to_hub_fails_with_one_clear_line(run_dir, tmp_path):
    # offline mode (conftest sets HF_HUB_OFFLINE=1 for the whole suite)
    with pytest.raises(FailforgeError, match=r"--push-to-hub me/failures: the Hugging Face Hub is not reachable") as e:
        export_run(run_dir, "hf", "failures", tmp_path / "hf", push_repo="me/failures")
    assert "\n" not in str(e.value) and "local export" in str(e.value)
    assert (tmp_path / "hf" / "dataset_dict.json").is_file()  # the local copy is complete
    with pytest.raises(ConfigError, match="needs --format hf"):
        export_run(run_dir, "jsonl", "failures", tmp_path / "f.jsonl", push_repo="me/failures")
    # online mode, hub unreachable (closed port): fails fast, one line, exit 2
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_dummy", "HF_HUB_ETAG_TIMEOUT": "3"}
    code = "from failforge.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "--quiet", "export", str(run_dir), "-f", "hf", "-w", "pairs", "-o", str(tmp_path / "hf2"), "--push-to-hub", "me/pairs"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --push-to-hub me/pairs:") and r.stderr.strip().count("\n") == 0


# --- the exported files train in TRL --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint() -> Path:
    try:
        from failforge.models.convert import ensure_checkpoint
    except ImportError:
        pytest.skip("failforge.models.convert.ensure_checkpoint is not available yet")
    from failforge.models.registry import resolve_weights

    return ensure_checkpoint(resolve_weights("smollm2-135m-instruct"))


def _args(cls, out: Path, **kw):
    # One short step: this proves the files' shape, not a model's quality.
    return cls(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=1,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **kw,
    )


@pytest.mark.slow
def test_exports_train_one_step_in_trl(run_dir, tmp_path, tiny_checkpoint):
    import math

    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.manual_seed(0)
    export_run(run_dir, "jsonl", "sft", tmp_path / "sft.jsonl", quiet=True)
    export_run(run_dir, "parquet", "pairs", tmp_path / "pairs.parquet", quiet=True)
    export_run(run_dir, "hf", "sft", tmp_path / "sft_hf", quiet=True)
    sft_ds = datasets.load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train")
    dpo_ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "pairs.parquet"), split="train")
    # the hf export loads as the same table as the jsonl one
    assert datasets.load_from_disk(str(tmp_path / "sft_hf"))["sft"]["messages"] == sft_ds["messages"]

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")  # LoRA: DPO's reference is the base, no copy
    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32)
    sft = SFTTrainer(model=model, args=_args(SFTConfig, tmp_path / "sft-out", max_length=64), train_dataset=sft_ds, processing_class=tok, peft_config=lora)
    out = sft.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss) and out.training_loss > 0

    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32)
    dpo = DPOTrainer(model=model, args=_args(DPOConfig, tmp_path / "dpo-out", max_length=96, beta=0.1), train_dataset=dpo_ds, processing_class=tok, peft_config=lora)
    assert len(dpo.train_dataset) == len(dpo_ds)  # no pair dropped by truncation
    out = dpo.train()
    assert out.global_step == 1
    # policy == reference at step 1, so the sigmoid DPO loss is exactly log 2 on any real pair
    assert abs(out.training_loss - math.log(2)) < 1e-3
    (logged,) = [h for h in dpo.state.log_history if "logps/chosen" in h]
    assert logged["logps/chosen"] != logged["logps/rejected"]  # chosen and rejected were different texts
