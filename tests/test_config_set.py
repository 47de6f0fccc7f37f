"""`failforge run --set PATH=VALUE`: overrides validated like the YAML file, one-line errors."""

import pytest
import yaml

from failforge.config import dump_config
from failforge.errors import ConfigError
from failforge.methods import get_method
from failforge.overrides import apply_overrides, build_run_config, parse_set
from test_config_cli import assert_one_line_error, cli

REVERSEGEN = get_method("reversegen").Config
ANSWER = get_method("answer").Config


# --- parse_set ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "arg, path, value",
    [
        ("iterations=2", "iterations", 2),
        ("train.proposer=null", "train.proposer", None),
        ("seeds.heldout=10", "seeds.heldout", 10),
        ("proposer={backend: llamacpp, model: x.gguf}", "proposer", {"backend": "llamacpp", "model": "x.gguf"}),
        ("name=a=b", "name", "a=b"),
        ("dedup_threshold=0.5", "dedup_threshold", 0.5),
        ("close_loop=false", "close_loop", False),
    ],
)
def test_parse_set_reads_the_value_as_yaml(arg, path, value):
    assert parse_set(arg) == (path, value)


@pytest.mark.parametrize("arg, needle", [("iterations", "--set iterations: expected PATH=VALUE"), ("=2", "empty key"), ("a..b=1", "empty key")])
def test_parse_set_rejects_bad_arguments(arg, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_set(arg)


def test_parse_set_malformed_yaml_value_names_the_path():
    with pytest.raises(ConfigError, match="--set proposer: malformed YAML"):
        parse_set("proposer={backend: x")


# --- apply_overrides ---------------------------------------------------------------


def test_nested_path_starts_from_the_options_default():
    data = apply_overrides({}, ["train.proposer.beta=0.2"], REVERSEGEN)
    cfg = REVERSEGEN.model_validate(data)
    assert cfg.train.proposer.beta == 0.2
    # the rest of the DPO defaults are kept, not reset to TrainSettings' own
    assert cfg.train.proposer.kind == "dpo" and cfg.train.proposer.learning_rate == 5e-5
    assert cfg.train.warmup.kind == "sft"


def test_overrides_do_not_change_the_input_and_apply_in_order():
    data = {"iterations": 1, "seeds": {"dataset": "arithmetic"}}
    out = apply_overrides(data, ["iterations=2", "seeds.heldout=10", "iterations=4"], REVERSEGEN)
    assert out == {"iterations": 4, "seeds": {"dataset": "arithmetic", "heldout": 10}}
    assert data == {"iterations": 1, "seeds": {"dataset": "arithmetic"}}


def test_null_and_a_whole_mapping():
    data = apply_overrides({}, ["train.proposer=null", "proposer={backend: llamacpp, model: x.gguf}"], REVERSEGEN)
    cfg = REVERSEGEN.model_validate(data)
    assert cfg.train.proposer is None
    assert cfg.proposer.model == "x.gguf"


def test_optional_model_that_is_null_takes_a_sub_key():
    data = apply_overrides({"judge": None}, ["judge.kind=math", "teacher.model=t.gguf"], REVERSEGEN)
    cfg = REVERSEGEN.model_validate(data)
    assert cfg.judge.kind == "math" and cfg.teacher.model == "t.gguf"


def test_dict_option_takes_any_sub_key():
    data = apply_overrides({}, ["task_options.reference=solver", "proposer.engine_args.gpu_memory_utilization=0.5"], REVERSEGEN)
    assert data["task_options"] == {"reference": "solver"}
    assert data["proposer"]["engine_args"] == {"gpu_memory_utilization": 0.5}


@pytest.mark.parametrize(
    "arg, message",
    [
        ("train.proposr.beta=0.2", "--set train.proposr.beta: unknown key train.proposr (did you mean train.proposer?)"),
        ("bogus=1", "--set bogus: unknown key bogus"),
        ("seeds.heldot=1", "--set seeds.heldot: unknown key seeds.heldot (did you mean seeds.heldout?)"),
        ("train.proposer.lora.xyz=8", "--set train.proposer.lora.xyz: unknown key train.proposer.lora.xyz"),
        ("iterations.x=1", "--set iterations.x: iterations takes no sub-keys"),
    ],
)
def test_unknown_path_is_named(arg, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides({}, [arg], REVERSEGEN)
    assert str(e.value) == message


def test_paths_are_checked_against_the_methods_schema():
    with pytest.raises(ConfigError, match="unknown key iterations"):
        apply_overrides({"method": "answer"}, ["iterations=2"], ANSWER)
    # the default SamplingParams(max_tokens=96) is where the sub-key starts from
    assert apply_overrides({}, ["sampling.temperature=0.7"], ANSWER) == {"sampling": {"max_tokens": 96, "temperature": 0.7}}


def test_sub_key_of_a_non_mapping_in_the_config():
    with pytest.raises(ConfigError, match="--set seeds.n: seeds is int in the config, not a mapping"):
        apply_overrides({"seeds": 5}, ["seeds.n=8"], REVERSEGEN)


# --- build_run_config ----------------------------------------------------------------


def test_build_run_config_default_job_and_config_file(tmp_path):
    cfg = build_run_config(None, ["iterations=2", "train.proposer=null", "seeds.heldout=10"])
    assert isinstance(cfg, REVERSEGEN)
    assert (cfg.iterations, cfg.train.proposer, cfg.seeds.heldout) == (2, None, 10)
    path = tmp_path / "c.yaml"
    path.write_text("method: answer\nlimit: 3\nmodel: {model: a.gguf}\n")
    cfg = build_run_config(path, ["limit=5", "model.batch_size=2"])
    assert isinstance(cfg, ANSWER)
    assert (cfg.limit, cfg.model.model, cfg.model.batch_size) == (5, "a.gguf", 2)
    assert build_run_config(path, []) == build_run_config(path)


def test_the_snapshot_records_the_override():
    cfg = build_run_config(None, ["train.proposer.beta=0.2", "name=tuned"])
    snapshot = yaml.safe_load(dump_config(cfg))
    assert snapshot["train"]["proposer"]["beta"] == 0.2 and snapshot["name"] == "tuned"


def test_set_method_picks_the_schema(tmp_path):
    cfg = build_run_config(None, ["method=answer", "limit=2"])
    assert isinstance(cfg, ANSWER) and cfg.limit == 2
    with pytest.raises(ConfigError, match="--set: method: unknown method 'nope'"):
        build_run_config(None, ["method=nope"])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["iterations=abc"], "--set: iterations: Input should be a valid integer"),
        (["iterations=0"], "--set: iterations: Input should be greater than or equal to 1"),
        (["train.proposer.kind=sft"], "--set: train: Value error, train.proposer.kind must be 'dpo'"),
        (["proposer={backend: nope}"], "--set: proposer.backend:"),
    ],
)
def test_wrong_value_names_the_option(sets, message):
    with pytest.raises(ConfigError) as e:
        build_run_config(None, sets)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_a_problem_in_the_file_still_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: answer\nlimit: 0\n")
    with pytest.raises(ConfigError, match=f"config {path}: limit"):
        build_run_config(path, ["model.batch_size=2"])
    # ... unless the override fixes it
    assert build_run_config(path, ["limit=1"]).limit == 1


# --- the command line (nothing here starts a real run) ----------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "iterations"], ["--set iterations", "PATH=VALUE"]),
        (["--set", "train.proposr.beta=0.2"], ["--set train.proposr.beta", "unknown key train.proposr"]),
        (["--set", "iterations=abc"], ["iterations", "valid integer"]),
        (["--set", "iterations=2", "--set", "seeds.bogus=1"], ["unknown key seeds.bogus"]),
    ],
)
def test_bad_set_one_line_exit_2_nothing_written(tmp_path, args, needles):
    run_dir = tmp_path / "run"
    proc = cli("run", "--run-dir", str(run_dir), *args, cwd=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_bad_set_with_a_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: answer\n")
    run_dir = tmp_path / "run"
    proc = cli("run", str(cfg), "--set", "limit=many", "--run-dir", str(run_dir))
    assert_one_line_error(proc, "limit")
    assert not run_dir.exists()


def test_set_reaches_the_run(tmp_path):
    # a valid override gets past the config stage: the pre-flight check then fails on
    # the missing prompts file the override names, before any run directory is written
    run_dir = tmp_path / "run"
    missing = tmp_path / "missing.jsonl"
    proc = cli("run", "--set", "method=answer", "--set", f"prompts={missing}", "--run-dir", str(run_dir))
    assert_one_line_error(proc, str(missing))
    assert not run_dir.exists()


def test_help_mentions_set():
    proc = cli("run", "--help")
    assert proc.returncode == 0 and "--set" in proc.stdout
