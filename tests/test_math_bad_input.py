"""Math input that yields nothing to check is a one-line error naming the file and the count."""

import json
import subprocess
import sys


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", *args], capture_output=True, text=True, cwd=cwd
    )


def test_seed_file_with_no_arithmetic_question(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"question": q}) for q in ["What is 5 more than 3?", "Name a prime.", "Hi"]))
    run_dir = tmp_path / "run"
    proc = cli("run", "--set", f"seeds.dataset={seeds}", "--set", "seeds.heldout=0", "--run-dir", str(run_dir))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and str(seeds) in line and "none of 3 rows" in line
    assert not run_dir.exists()


def test_judge_eval_file_with_nothing_scorable(tmp_path):
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": "Tell a joke", "response": "42", "label": "fail"}) for _ in range(3)))
    proc = cli("judge-eval", "--judge", "math", "--data", str(data), "--instruction-col", "instruction")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and str(data) in line and "none of 3 rows" in line
