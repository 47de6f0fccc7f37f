"""Property-based tests (hypothesis) of config parsing and of the dataset and
labelled-file loaders: any input gives a value or a failforge error (one line at the CLI),
never another exception; what is written in a supported format reads back the same."""

from __future__ import annotations

import csv
import io
import json
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from failforge.config import dump_config, load_yaml, parse_run_config
from failforge.data.base import SOURCE_KEY
from failforge.data.loaders import load_local
from failforge.errors import FailforgeError
from failforge.judges.labelled import load_labelled, read_rows
from failforge.judges.refusal import RefusalConfig, RefusalJudge
from failforge.overrides import apply_overrides, parse_set

# derandomize: the same examples on every machine, so a suite that passes here passes in CI
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, the shapes YAML configs are made of
scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
KEYS = ["method", "name", "seed", "model", "prompts", "limit", "sampling", "iterations", "seeds", "judge", "train", "bogus"]
config_maps = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=6)


def one_line_error(call: Callable[[], Any]) -> Any:
    """The call's value, or None after a FailforgeError with a message (the CLI prints
    it on one line, folding any line break the input itself carried)."""
    try:
        return call()
    except FailforgeError as e:
        assert str(e).strip(), "an error without a message"
        return None


def in_file(name: str, data: bytes, read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        return read(p)


# --- config -----------------------------------------------------------------------
@SETTINGS
@given(config_maps)
@example({"method": "reversegen", "task_options": {"bogus": 1}})
@example({"method": "reversegen", "task": "honesty", "task_options": {"k": "many"}})
def test_any_mapping_is_a_config_or_a_one_line_error(data):
    cfg = one_line_error(lambda: parse_run_config(data))
    if cfg is not None:  # what parses survives the snapshot a run directory keeps
        assert parse_run_config(yaml.safe_load(dump_config(cfg))) == cfg
        if getattr(cfg, "task", None):  # and its task options build the task
            from failforge.tasks import make_task

            one_line_error(lambda: make_task(cfg.task, **cfg.task_options))


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(b"[" * 5000)  # nested past the parser's recursion limit
@example(b"model: {engine_args: &x {a: *x}}\n")  # an alias inside itself
@example(b"\x00")
def test_any_file_is_yaml_mapping_or_a_one_line_error(raw):
    out = in_file("c.yaml", raw, lambda p: one_line_error(lambda: load_yaml(p)))
    assert out is None or isinstance(out, dict)


@SETTINGS
@given(
    limit=st.none() | st.integers(1, 10**6),
    temperature=st.floats(0, 5, allow_nan=False),
    top_p=st.floats(0.01, 1.0),
    max_tokens=st.integers(1, 4096),
    stop=st.lists(st.text(min_size=1, max_size=5), max_size=3),
    name=st.none() | st.text(max_size=30),
)
@example(limit=None, temperature=0.0, top_p=1.0, max_tokens=8, stop=["\x85", "\u2028"], name="é")  # YAML line breaks
def test_valid_answer_configs_round_trip(limit, temperature, top_p, max_tokens, stop, name):
    data = {
        "method": "answer",
        "name": name,
        "limit": limit,
        "sampling": {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "stop": stop},
    }
    cfg = parse_run_config(data)
    assert cfg.sampling.stop == tuple(stop) and cfg.limit == limit
    assert parse_run_config(yaml.safe_load(dump_config(cfg))) == cfg


@SETTINGS
@given(st.text(max_size=60))
@example("model.engine_args=&x {a: *x}")
@example("limit=" + "[" * 5000)
def test_any_set_argument_is_applied_or_a_one_line_error(arg):
    from failforge.methods import get_method

    schema = get_method("answer").Config

    def apply():
        path, value = parse_set(arg)
        data = apply_overrides({"method": "answer"}, [arg], schema)
        assert isinstance(data, dict) and path.split(".")[0] in data
        return value

    one_line_error(apply)


# --- dataset loaders ---------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]), st.binary(max_size=400))
@example(".jsonl", b"[" * 5000 + b"]" * 5000)
@example(".json", b"[" * 5000)
@example(".csv", b"a\n\x00\n")
def test_any_bytes_load_as_rows_or_a_one_line_error(suffix, raw):
    rows = in_file("d" + suffix, raw, lambda p: one_line_error(lambda: load_local(p)))
    assert rows is None or all(isinstance(r, dict) and SOURCE_KEY in r for r in rows)


json_rows = st.lists(st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=6), scalars, max_size=4), max_size=8)


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != SOURCE_KEY} for r in rows]


@SETTINGS
@given(json_rows)
def test_jsonl_and_json_read_back_what_was_written(rows):
    jsonl = "\n".join(json.dumps(r) for r in rows).encode()
    assert _strip(in_file("d.jsonl", jsonl, load_local)) == rows
    assert _strip(in_file("d.json", json.dumps(rows).encode(), load_local)) == rows


cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=12)
columns = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=4, unique=True)


@st.composite
def tables(draw) -> tuple[list[str], list[dict[str, str]]]:
    cols = draw(columns)
    rows = draw(st.lists(st.fixed_dictionaries({c: cell for c in cols}), max_size=6))
    return cols, rows


def _csv_bytes(cols: list[str], rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


@SETTINGS
@given(tables())
def test_csv_reads_back_what_was_written(table):
    cols, rows = table
    assert _strip(in_file("d.csv", _csv_bytes(cols, rows), load_local)) == rows


# --- labelled files (judge data) ------------------------------------------------------------
@SETTINGS
@given(st.sampled_from([".csv", ".jsonl", ".tsv", ".parquet", ".txt"]), st.binary(max_size=400))
@example(".jsonl", b"[" * 5000)
def test_any_bytes_are_labelled_rows_or_a_one_line_error(suffix, raw):
    rows = in_file("l" + suffix, raw, lambda p: one_line_error(lambda: read_rows(p)))
    assert rows is None or isinstance(rows, list)


labelled = st.lists(st.tuples(cell.filter(lambda s: s.strip() == s), st.sampled_from([0, 1, "1", "0", True, False])), min_size=1, max_size=8)


@SETTINGS
@given(labelled, st.sampled_from([".csv", ".jsonl"]))
def test_labels_read_back_as_fail_and_pass(items, suffix):
    rows = [{"response": text, "label": label} for text, label in items]
    if suffix == ".csv":
        raw = _csv_bytes(["response", "label"], [{"response": t, "label": str(int(label) if isinstance(label, bool) else label)} for t, label in items])
    else:
        raw = "\n".join(json.dumps(r) for r in rows).encode()
    judge = RefusalJudge(RefusalConfig())
    got = in_file("l" + suffix, raw, lambda p: load_labelled(p, judge))
    want = ["fail" if str(int(label) if isinstance(label, bool) else label) == "1" else "pass" for _, label in items]
    assert [r.human for r in got] == want
    assert [r.item.responses[0] for r in got] == [t for t, _ in items]
