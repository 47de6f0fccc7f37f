"""A corpus of bad inputs, each through the real `failforge` command: one line naming
the problem, exit code 2, no traceback, and nothing written (the folder the test
works in is byte-for-byte the same afterwards; no run directory appears)."""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from runcli import cli

from failforge.models.registry import resolve_weights

GGUF = resolve_weights("smollm2-135m-instruct")


@dataclass(frozen=True)
class Case:
    id: str
    #: writes what the case needs under the folder and returns the command's arguments
    build: Callable[[Path, dict[str, str]], list[str]]
    #: what the one line must name
    needles: tuple[str, ...]


# --- builders ---------------------------------------------------------------------
def _run(tmp: Path, config: str, *extra: str) -> list[str]:
    (tmp / "c.yaml").write_text(config, encoding="utf-8")
    return ["run", str(tmp / "c.yaml"), "--run-dir", str(tmp / "run"), *extra]


#: a case that wrongly passed pre-flight runs against the fake server, never a real model
OK = "@OK@"
FAKE_MODEL = f"{{backend: openai, base_url: '{OK}', model: fake}}"
#: the same for the default ReverseGen job: every role served by the fake server, one short iteration
RG_SETS = [f"{role}={FAKE_MODEL}" for role in ("proposer", "target")] + ["iterations=1", "embedding_metrics=false"]


def _rg(tmp: Path, *sets: str) -> list[str]:
    return ["run", *(a for s in [*RG_SETS, *sets] for a in ("--set", s)), "--run-dir", str(tmp / "run")]


def _answer(prompts: str | None = None, model: str = FAKE_MODEL, extra: str = "") -> str:
    lines = ["method: answer", f"model: {model}"]
    if prompts is not None:
        lines.append(f"prompts: '{prompts}'")
    return "\n".join(lines) + "\n" + extra


def prompts_file(name: str, content: bytes) -> Callable[[Path, dict[str, str]], list[str]]:
    def build(tmp: Path, _: dict[str, str]) -> list[str]:
        (tmp / name).write_bytes(content)
        return _run(tmp, _answer(str(tmp / name)))

    return build


def config_text(text: str) -> Callable[[Path, dict[str, str]], list[str]]:
    return lambda tmp, _: _run(tmp, text)


def config_bytes(data: bytes) -> Callable[[Path, dict[str, str]], list[str]]:
    def build(tmp: Path, _: dict[str, str]) -> list[str]:
        (tmp / "c.yaml").write_bytes(data)
        return ["run", str(tmp / "c.yaml"), "--run-dir", str(tmp / "run")]

    return build


def gguf_file(content: Callable[[], bytes]) -> Callable[[Path, dict[str, str]], list[str]]:
    def build(tmp: Path, _: dict[str, str]) -> list[str]:
        (tmp / "m.gguf").write_bytes(content())
        return _run(tmp, _answer(model=f"{{backend: llamacpp, model: '{tmp / 'm.gguf'}'}}"))

    return build


def _gguf_head(n: int) -> bytes:
    with open(GGUF, "rb") as f:
        return f.read(n)


def seeds_file(name: str, content: bytes, *sets: str) -> Callable[[Path, dict[str, str]], list[str]]:
    def build(tmp: Path, _: dict[str, str]) -> list[str]:
        (tmp / name).write_bytes(content)
        return _rg(tmp, f"seeds.dataset={tmp / name}", *sets)

    return build


def server(kind: str, extra: str = "") -> Callable[[Path, dict[str, str]], list[str]]:
    return lambda tmp, urls: _run(tmp, _answer(model=f"{{backend: openai, base_url: '{urls[kind]}', model: fake{extra}}}"))


def _jsonl(*rows: object) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def _run_dir_is_a_file(tmp: Path, _: dict[str, str]) -> list[str]:
    (tmp / "run").write_text("not a folder")
    return _run(tmp, _answer())


def _run_dir_under_a_file(tmp: Path, _: dict[str, str]) -> list[str]:
    (tmp / "afile").write_text("not a folder")
    return ["run", "--run-dir", str(tmp / "afile" / "run"), str(_write(tmp / "c.yaml", _answer()))]


def _run_dir_unwritable(tmp: Path, _: dict[str, str]) -> list[str]:
    # /proc refuses new folders to every user, root included
    return ["run", str(_write(tmp / "c.yaml", _answer())), "--run-dir", "/proc/failforge-run"]


def _existing_run(tmp: Path, _: dict[str, str]) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("method: answer\n")
    return _run(tmp, _answer())


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _resume_not_a_run(tmp: Path, _: dict[str, str]) -> list[str]:
    (tmp / "empty").mkdir()
    return ["resume", str(tmp / "empty")]


def _report_corrupt_store(tmp: Path, _: dict[str, str]) -> list[str]:
    (tmp / "r").mkdir()
    (tmp / "r" / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    return ["report", str(tmp / "r"), "-o", str(tmp / "out.html")]


def _judge_eval(name: str, content: bytes, *opts: str) -> Callable[[Path, dict[str, str]], list[str]]:
    def build(tmp: Path, _: dict[str, str]) -> list[str]:
        (tmp / name).write_bytes(content)
        return ["judge-eval", "--judge", "refusal", "--data", str(tmp / name), *opts]

    return build


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


MATH_ROWS = _jsonl({"question": "Name a prime."}, {"question": "Hello"}, {"question": "Spell cat."})

CASES = [
    # --- config: YAML, keys, types, ranges ---------------------------------------------
    Case("yaml-unclosed-brace", config_text("method: answer\nmodel: {backend: llamacpp\n"), ("malformed YAML", "line")),
    Case("yaml-bad-indent", config_text("method: answer\nsampling:\n  max_tokens: 5\n max_tokens: 6\n"), ("malformed YAML",)),
    Case("yaml-tab-indent", config_text("method: answer\nsampling:\n\tmax_tokens: 5\n"), ("malformed YAML",)),
    Case("yaml-top-level-list", config_text("- a\n- b\n"), ("mapping", "list")),
    Case("yaml-top-level-scalar", config_text("just words\n"), ("mapping", "str")),
    Case("config-invalid-utf8", config_bytes(b"method: answer\nname: \xff\xfe\n"), ("invalid UTF-8",)),
    Case("config-missing", lambda tmp, _: ["run", str(tmp / "nope.yaml"), "--run-dir", str(tmp / "run")], ("nope.yaml", "no such file")),
    Case("config-is-a-folder", lambda tmp, _: ["run", str(tmp), "--run-dir", str(tmp / "run")], ("is a directory",)),
    Case("unknown-top-level-key", config_text(_answer(extra="bogus: 1\n")), ("bogus", "unknown key")),
    Case("unknown-nested-key", config_text(_answer(model=f"{{backend: openai, base_url: '{OK}', bogus: 1}}")), ("model.bogus", "unknown key")),
    Case("unknown-method", config_text("method: nosuchmethod\n"), ("unknown method", "nosuchmethod")),
    Case("unknown-backend", config_text(_answer(model="{backend: nope}")), ("model.backend",)),
    Case("wrong-type-limit", config_text(_answer(extra="limit: many\n")), ("limit", "many")),
    Case("wrong-type-temperature", config_text(_answer(extra="sampling: {temperature: hot}\n")), ("sampling.temperature",)),
    Case("wrong-type-model-scalar", config_text("method: answer\nmodel: 5\n"), ("model",)),
    Case("wrong-type-stop-mapping", config_text(_answer(extra="sampling: {stop: {a: 1}}\n")), ("sampling.stop",)),
    Case("out-of-range-limit", config_text(_answer(extra="limit: 0\n")), ("limit", "greater than or equal to 1")),
    Case("out-of-range-top-p", config_text(_answer(extra="sampling: {top_p: 2}\n")), ("sampling.top_p",)),
    Case("out-of-range-batch", config_text(_answer(model="{batch_size: 0}")), ("model.batch_size",)),
    Case("out-of-range-iterations", config_text("method: reversegen\niterations: 0\n"), ("iterations",)),
    Case("out-of-range-dedup", config_text("method: reversegen\ndedup_threshold: 1.5\n"), ("dedup_threshold",)),
    Case("yaml-nested-too-deep", config_text("method: answer\nname: " + "[" * 5000 + "\n"), ("nested too deeply",)),
    Case("yaml-alias-cycle", config_text(_answer(extra="task_options: &x {a: *x}\n")), ("alias",)),
    Case("task-option-unknown", lambda tmp, _: _rg(tmp, "task_options={bogus: 1}"), ("task_options.bogus", "unknown option")),
    Case("task-option-wrong-type", lambda tmp, _: _rg(tmp, "task=honesty", "task_options={k: many}"), ("task_options.k", "many")),
    Case("set-unknown-path", lambda tmp, _: _rg(tmp, "bogus.key=1"), ("bogus",)),
    Case("set-malformed-value", lambda tmp, _: _rg(tmp, "iterations=[1"), ("iterations",)),
    Case("set-no-equals", lambda tmp, _: _rg(tmp, "iterations"), ("iterations",)),
    # --- model weights --------------------------------------------------------------------
    Case("gguf-missing", config_text(_answer(model="{model: /nonexistent/model.gguf}")), ("/nonexistent/model.gguf", "no such file")),
    Case("gguf-empty", gguf_file(lambda: b""), ("m.gguf", "empty file")),
    Case("gguf-not-gguf", gguf_file(lambda: b"PK\x03\x04 a zip file, not weights" * 10), ("m.gguf", "not a GGUF file")),
    Case("gguf-truncated-header", gguf_file(lambda: _gguf_head(100_000)), ("m.gguf", "truncated")),
    Case("gguf-truncated-tensors", gguf_file(lambda: _gguf_head(2_000_000)), ("m.gguf", "truncated", "the file has 2000000")),
    Case("gguf-corrupt-header", gguf_file(lambda: b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + b"\xff" * 64), ("m.gguf", "corrupt")),
    Case("gguf-bad-version", gguf_file(lambda: b"GGUF" + struct.pack("<I", 99) + b"\0" * 64), ("m.gguf", "unsupported GGUF version 99")),
    Case("adapter-missing", config_text(_answer(model="{backend: transformers, model: smollm2-135m-instruct, adapter: /nope/adapter}")), ("/nope/adapter",)),
    # --- prompt and seed files ------------------------------------------------------------
    Case("prompts-missing", config_text(_answer("/nonexistent/p.jsonl")), ("/nonexistent/p.jsonl", "no such file")),
    Case("prompts-empty-file", prompts_file("p.jsonl", b""), ("no prompts",)),
    Case("prompts-blank-lines", prompts_file("p.jsonl", b"\n\n  \n"), ("no prompts",)),
    Case("prompts-invalid-json-line", prompts_file("p.jsonl", b'{"prompt": "a"}\n{"prompt": \n'), ("p.jsonl", "invalid JSON")),
    Case("prompts-array-line", prompts_file("p.jsonl", b'["prompt", "a"]\n'), ("p.jsonl", "object")),
    Case("prompts-no-prompt-field", prompts_file("p.jsonl", _jsonl({"question": "a"})), ("p.jsonl", "prompt")),
    Case("prompts-empty-prompt", prompts_file("p.jsonl", _jsonl({"prompt": "  "})), ("p.jsonl", "non-empty")),
    Case("prompts-number-prompt", prompts_file("p.jsonl", _jsonl({"prompt": 5})), ("p.jsonl", "prompt")),
    Case("prompts-invalid-utf8", prompts_file("p.jsonl", b'{"prompt": "caf\xe9"}\n'), ("p.jsonl", "invalid UTF-8")),
    Case("prompts-csv-missing-column", prompts_file("p.csv", b"question,id\nwhat?,1\n"), ("p.csv", "prompt")),
    Case("prompts-csv-extra-fields", prompts_file("p.csv", b"prompt\nhello,extra\n"), ("p.csv", "more fields")),
    Case("prompts-csv-empty", prompts_file("p.csv", b""), ("p.csv", "empty")),
    Case("prompts-csv-invalid-utf8", prompts_file("p.csv", b"prompt\n\xff\xfe\xfa\n"), ("p.csv", "invalid UTF-8")),
    Case("prompts-json-not-a-list", prompts_file("p.json", b'{"prompt": "a"}'), ("p.json", "list of objects")),
    Case("prompts-json-malformed", prompts_file("p.json", b'[{"prompt": "a"'), ("p.json", "invalid JSON")),
    Case("prompts-json-nested-too-deep", prompts_file("p.json", b"[" * 5000), ("p.json", "nested too deeply")),
    Case("prompts-parquet-corrupt", prompts_file("p.parquet", b"PAR1 not really parquet"), ("p.parquet", "Parquet")),
    Case("prompts-unsupported-type", prompts_file("p.txt", b"hello\n"), ("p.txt", "unsupported file type")),
    Case("prompts-is-a-folder", lambda tmp, _: (tmp / "p.jsonl").mkdir() or _run(tmp, _answer(str(tmp / "p.jsonl"))), ("p.jsonl", "is a directory")),
    Case("seeds-no-valid-math-row", seeds_file("s.jsonl", MATH_ROWS, "seeds.heldout=0"), ("s.jsonl", "none of 3 rows")),
    Case("seeds-empty-file", seeds_file("s.jsonl", b"", "seeds.heldout=0"), ("s.jsonl", "no rows")),
    Case("seeds-too-few", seeds_file("s.jsonl", _jsonl(*({"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)))), ("seeds",)),
    Case("seeds-invalid-utf8", seeds_file("s.jsonl", b'{"question": "\xff"}\n'), ("s.jsonl", "invalid UTF-8")),
    Case("dataset-unknown-name", lambda tmp, _: _rg(tmp, "seeds.dataset=nosuchset"), ("nosuchset", "not a known name")),
    Case("dataset-hub-ref-no-name", lambda tmp, _: _rg(tmp, "seeds.dataset=hf:@train"), ("hf:@train", "expected hf:NAME")),
    Case("train-batch-not-shared-by-processes", lambda tmp, _: _rg(tmp, "train.proposer.processes=3"), ("train.proposer", "multiple of processes 3")),
    Case("train-classifier-with-processes", lambda tmp, _: ["run", str(Path(__file__).resolve().parent.parent / "configs" / "adversarial-judge.yaml"),
         "--set", "train.processes=2", "--run-dir", str(tmp / "run")], ("train", "classifier steps train in the run's process")),
    Case("train-inprocess-with-processes", lambda tmp, _: _rg(tmp, "train.target.processes=2", "train.target.launcher=inprocess"), ("train.target", "launcher inprocess")),
    # --- servers ----------------------------------------------------------------------
    Case("server-unreachable", server("closed", ", max_retries: 1"), ("openai backend", "127.0.0.1")),
    Case("server-answers-html", server("html"), ("openai backend", "not JSON")),
    Case("server-no-base-url", config_text(_answer(model="{backend: openai, model: fake}")), ("base_url",)),
    Case("server-bad-scheme", config_text(_answer(model="{backend: openai, model: fake, base_url: 'ftp://127.0.0.1/v1'}")), ("base_url",)),
    # --- run directories --------------------------------------------------------------
    Case("run-dir-is-a-file", _run_dir_is_a_file, ("run", "not a directory")),
    Case("run-dir-under-a-file", _run_dir_under_a_file, ("afile",)),
    Case("run-dir-unwritable", _run_dir_unwritable, ("/proc/failforge-run", "cannot create")),
    Case("run-dir-holds-a-run", _existing_run, ("already holds a run",)),
    Case("resume-not-a-run", _resume_not_a_run, ("not a run directory",)),
    Case("resume-missing-dir", lambda tmp, _: ["resume", str(tmp / "nope")], ("nope", "no such directory")),
    Case("report-corrupt-store", _report_corrupt_store, ("store.sqlite", "cannot open the run store")),
    # --- judge data -------------------------------------------------------------------
    Case("judge-data-missing-column", _judge_eval("l.csv", b"text,label\nhi,1\n", "--instruction-col", "prompt"), ("no such column", "l.csv")),
    Case("judge-data-invalid-utf8", _judge_eval("l.jsonl", b'{"response": "\xff", "label": 1}\n'), ("l.jsonl", "invalid UTF-8")),
    Case("judge-data-empty", _judge_eval("l.csv", b""), ("l.csv", "no rows")),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime: what "nothing written" compares."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def urls():
    with FakeOpenAI("html") as html, FakeOpenAI() as ok:
        yield {"html": html.base_url, "ok": ok.base_url, "closed": f"http://127.0.0.1:{_closed_port()}/v1"}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, urls: dict[str, str]):
    args = case.build(tmp_path, urls)
    config = tmp_path / "c.yaml"
    if config.is_file() and OK.encode() in config.read_bytes():
        config.write_bytes(config.read_bytes().replace(OK.encode(), urls["ok"].encode()))
    args = [a.replace(OK, urls["ok"]) for a in args]
    before = snapshot(tmp_path)
    proc = cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "the command wrote something"
    assert not Path("/proc/failforge-run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_run_dir_in_a_read_only_folder(tmp_path: Path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with FakeOpenAI() as srv:
            config = _write(tmp_path / "c.yaml", _answer(model=f"{{backend: openai, base_url: '{srv.base_url}', model: fake}}"))
            proc = cli("run", str(config), "--run-dir", str(parent / "run"), timeout=120)
    finally:
        parent.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: run directory {parent / 'run'}: cannot create it (Permission denied)"
    assert list(parent.iterdir()) == []


def test_a_1mb_model_answer_is_stored_whole(tmp_path: Path):
    """Not an error: a huge answer is kept, and the run finishes."""
    from failforge.run.store import RunStore

    with FakeOpenAI(answer_bytes=1 << 20) as srv:
        (tmp_path / "p.jsonl").write_bytes(_jsonl({"prompt": "write a lot"}))
        args = _run(tmp_path, _answer(str(tmp_path / "p.jsonl"), model=f"{{backend: openai, base_url: '{srv.base_url}', model: fake}}"))
        proc = cli(*args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    store = RunStore(tmp_path / "run" / "store.sqlite", readonly=True)
    try:
        (answer,) = store.records("answer")
        assert len(answer["responses"][0]) == 1 << 20
    finally:
        store.close()
