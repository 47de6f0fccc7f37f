"""Pinned inputs: a run records the sha256 of its config and of every input it reads;
a resume whose inputs changed refuses in one line naming the input, unless
--allow-changed, which resumes and records the change (store meta and log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from runcli import cli

from failforge.run import hashing
from failforge.run.hashing import Digest, digest
from failforge.run.inputs import InputChanged, InputLedger, Pin, note_file, note_value
from failforge.run.store import RunStore


def _prompts(path: Path, n: int) -> Path:
    path.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(n)))
    return path


@pytest.fixture
def server():
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def run(tmp_path, server):
    """A finished answer run over a prompts file: (run_dir, prompts file)."""
    prompts = _prompts(tmp_path / "p.jsonl", 3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: answer\nmodel: {{backend: openai, base_url: '{server.base_url}', model: fake}}\nprompts: '{prompts}'\n")
    run_dir = tmp_path / "run"
    proc = cli("run", str(cfg), "--run-dir", str(run_dir), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return run_dir, prompts


def _meta(run_dir: Path) -> dict:
    store = RunStore(run_dir / "store.sqlite", readonly=True)
    try:
        return store.meta()
    finally:
        store.close()


def _state(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_a_run_pins_its_config_and_inputs(run):
    run_dir, prompts = run
    pins = _meta(run_dir)["inputs"]
    assert set(pins) == {f"config {(run_dir / 'config.yaml').resolve()}", f"data file {prompts.resolve()}"}
    assert pins[f"data file {prompts.resolve()}"]["sha256"] == hashing.cached_sha256(prompts)


def test_changed_input_refuses_in_one_line_and_writes_nothing(run):
    run_dir, prompts = run
    before = _state(run_dir)
    prompts.write_text(prompts.read_text() + "\n" + json.dumps({"prompt": "a new one"}))
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("error: input changed since the run started: ")
    assert f"data file {prompts.resolve()}" in line and "--allow-changed" in line
    assert _state(run_dir) == before  # store, log and config untouched; no lock left


def test_edited_config_refuses(run):
    run_dir, _ = run
    cfg = run_dir / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_tokens: 96", "max_tokens: 95"))
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 2 and f"config {cfg.resolve()}" in proc.stderr


def test_deleted_input_refuses(run):
    run_dir, prompts = run
    prompts.unlink()
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 2 and f"data file {prompts.resolve()}" in proc.stderr and "missing now" in proc.stderr


def test_allow_changed_resumes_and_records_it(run, server):
    run_dir, prompts = run
    old_sha = _meta(run_dir)["inputs"][f"data file {prompts.resolve()}"]["sha256"]
    _prompts(prompts, 4)
    calls = server.calls
    proc = cli("resume", str(run_dir), "--allow-changed", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert server.calls - calls == 1  # only the new prompt was asked
    meta = _meta(run_dir)
    (change,) = meta["inputs_changed"]
    key = f"data file {prompts.resolve()}"
    assert change["input"] == key and change["was"] == old_sha and change["now"] == hashing.cached_sha256(prompts)
    assert meta["inputs"][key]["sha256"] == change["now"]  # the new content is pinned from now on
    assert f"resumed with a changed input (--allow-changed): {key}" in (run_dir / "run.log").read_text()
    again = cli("resume", str(run_dir), timeout=120)
    assert again.returncode == 0, again.stderr  # no flag needed for what was accepted


def test_a_run_from_before_pinning_resumes_and_gets_pinned(run):
    run_dir, _ = run
    store = RunStore(run_dir / "store.sqlite")
    with store.transaction() as c:
        c.execute("DELETE FROM meta WHERE key='inputs'")
    store.close()
    proc = cli("resume", str(run_dir), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(_meta(run_dir)["inputs"]) == 2


# --- the ledger, in process ----------------------------------------------------------------
def test_weights_are_pinned_through_resolve_weights(tmp_path):
    from failforge.models.registry import resolve_weights

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" + b"\0" * 1000)
    ledger = InputLedger()
    with ledger.active():
        resolve_weights(str(weights))
    (pin,) = ledger.pins.values()
    assert (pin.kind, pin.ref) == ("weights", str(weights.resolve()))
    weights.write_bytes(b"GGUF" + b"\1" * 1000)
    resumed = InputLedger({k: p.model_dump() for k, p in ledger.pins.items()})
    with pytest.raises(InputChanged, match=f"weights {weights.resolve()}"):
        resumed.recheck()


def test_weights_folder_is_pinned_file_by_file(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    first = digest(folder)
    (folder / "model.safetensors").write_bytes(b"\1" * 64)
    assert digest(folder, first).sha256 != first.sha256


def test_a_resume_does_not_hash_unchanged_files_again(tmp_path, monkeypatch):
    big = tmp_path / "weights.gguf"
    big.write_bytes(b"\0" * (1 << 20))
    ledger = InputLedger()
    with ledger.active():
        note_file("weights", big)
    hashed: list[Path] = []
    monkeypatch.setattr(hashing, "cached_sha256", lambda p: hashed.append(p) or "x")
    resumed = InputLedger({k: p.model_dump() for k, p in ledger.pins.items()})
    resumed.recheck()
    with resumed.active():
        note_file("weights", big)
    assert hashed == []  # size and mtime unchanged: the recorded digest stands
    big.write_bytes(b"\1" * (1 << 20))
    with pytest.raises(InputChanged):
        resumed.recheck()
    assert hashed == [big.resolve()]


def test_digest_trusts_a_matching_stamp_only(tmp_path):
    f = tmp_path / "f"
    f.write_text("a")
    known = Digest(sha256="recorded", stamp=hashing.stamp(f))
    assert digest(f, known).sha256 == "recorded"
    f.write_text("bb")
    assert digest(f, known).sha256 == hashing.cached_sha256(f)


def test_datasets_by_name_and_judge_data_are_pinned(tmp_path):
    from failforge.judges.labelled import read_rows

    labels = tmp_path / "labels.csv"
    labels.write_text("response,label\nno,1\n")
    ledger = InputLedger()
    with ledger.active():
        note_value("dataset", "harmbench", "abc")
        read_rows(labels)
    assert {p.key for p in ledger.pins.values()} == {"dataset harmbench", f"judge data {labels.resolve()}"}
    resumed = InputLedger({k: p.model_dump() for k, p in ledger.pins.items()})
    with resumed.active(), pytest.raises(InputChanged, match="dataset harmbench"):
        note_value("dataset", "harmbench", "def")


def test_outside_a_run_nothing_is_pinned_or_hashed(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "cached_sha256", lambda p: pytest.fail("hashed outside a run"))
    (tmp_path / "f").write_text("x")
    note_file("data file", tmp_path / "f")
    note_value("dataset", "x", lambda: pytest.fail("computed outside a run"))


def test_the_runs_own_files_are_not_inputs(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    (run_dir / "models" / "m.gguf").write_bytes(b"x")
    (tmp_path / "seeds.jsonl").write_text("{}")
    ledger = InputLedger(exclude=run_dir)
    with ledger.active():
        note_file("weights", run_dir / "models" / "m.gguf")
        note_file("data file", tmp_path / "seeds.jsonl")
    assert [p.kind for p in ledger.pins.values()] == ["data file"]


def test_allow_changed_collects_every_change_and_writes_them_once_attached(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("1")
    ledger = InputLedger()
    with ledger.active():
        note_file("data file", a)
        note_file("data file", b)
    recorded = {k: p.model_dump() for k, p in ledger.pins.items()}
    a.write_text("22")
    b.write_text("22")
    with pytest.raises(InputChanged, match=r"\(and 1 more\)"):
        InputLedger(recorded).recheck()
    allowed = InputLedger(recorded, allow_changed=True)
    allowed.recheck()

    class Meta:
        def __init__(self):
            self.values: dict = {"inputs_changed": [{"input": "earlier"}]}

        def meta(self):
            return dict(self.values)

        def set_meta(self, **kw):
            self.values.update(kw)

    store, lines = Meta(), []
    allowed.attach(store, lines.append)
    assert [c["input"] for c in store.values["inputs_changed"]] == ["earlier", f"data file {a.resolve()}", f"data file {b.resolve()}"]
    assert len(lines) == 2 and all("--allow-changed" in ln for ln in lines)
    assert all(Pin.model_validate(p).sha256 == hashing.cached_sha256(Path(p["ref"])) for p in store.values["inputs"].values())
