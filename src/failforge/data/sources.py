"""Parsers: the bytes of files read out of a package archive -> rows with a fixed schema.

One function per file layout. Each takes ``{member path: bytes}`` (in the order the
catalogue lists the members) and the entry's options, and returns rows. A parser
never executes package code, except ``gsm_symbolic``, which runs the package's own
problem generators in a separate, standard-library-only interpreter (see there).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from failforge.data.base import Row
from failforge.errors import DatasetError

Members = dict[str, bytes]
Parser = Callable[[Members, dict[str, Any]], list[Row]]


def _text(member: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{member}: invalid UTF-8 at byte {e.start}") from None


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise DatasetError(f"{where}: missing column {key!r}")
    return record[key]


def jsonl_records(member: str, data: bytes) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(_text(member, data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{member}:{i}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise DatasetError(f"{member}:{i}: JSON nested too deeply") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{member}:{i}: expected a JSON object per line")
        out.append(record)
    return out


def _csv(member: str, data: bytes) -> list[dict[str, str]]:
    # Some files open with "# ..." comment lines before the header.
    lines = _text(member, data).splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return list(csv.DictReader(io.StringIO("".join(lines[start:]), newline="")))


def _number(text: str) -> int | float | None:
    """The leading number of an answer such as "9 apples" or "1,250"; None if there is none."""
    m = re.match(r"\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(?![\d:/])", text)
    if not m:
        return None
    value = float(m.group(1).replace(",", ""))
    return int(value) if value.is_integer() else value


def lines(members: Members, options: dict[str, Any]) -> list[Row]:
    column = options.get("column", "prompt")
    return [
        {column: line.strip()}
        for member, data in members.items()
        for line in _text(member, data).splitlines()
        if line.strip()
    ]


def donotanswer(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        category = PurePosixPath(member).stem
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            prompt, intents = _field(r, "prompt", where), _field(r, "intents", where)
            rows.append({"prompt": prompt, "category": category, "intents": intents})
    return rows


def pyrit_seeds(members: Members, options: dict[str, Any]) -> list[Row]:
    import yaml

    rows = []
    for member, data in members.items():
        try:
            doc = yaml.safe_load(_text(member, data))
        except yaml.YAMLError as e:
            raise DatasetError(f"{member}: invalid YAML ({e})") from None
        seeds = _field(doc or {}, "seeds", member)
        for i, seed in enumerate(seeds):
            where = f"{member}: seed {i}"
            rows.append({"prompt": _field(seed, "value", where), "harm_categories": seed.get("harm_categories") or []})
    return rows


def harmbench_csv(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        split = "val" if member.endswith("_val.csv") else "test"
        for i, r in enumerate(_csv(member, data), 2):
            where = f"{member}:{i}"
            rows.append(
                {
                    "prompt": _field(r, "Behavior", where),
                    "category": _field(r, "SemanticCategory", where),
                    "functional_category": _field(r, "FunctionalCategory", where),
                    "context": _field(r, "ContextString", where),
                    "behavior_id": _field(r, "BehaviorID", where),
                    "split": split,
                }
            )
    return rows


def strongreject(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        for i, r in enumerate(_csv(member, data), 2):
            where = f"{member}:{i}"
            rows.append(
                {
                    "prompt": _field(r, "forbidden_prompt", where),
                    "category": _field(r, "category", where),
                    "origin": _field(r, "source", where),
                }
            )
    return rows


def refusal_labels(members: Members, options: dict[str, Any]) -> list[Row]:
    """Human-labelled (objective, response) pairs; label 1 = the response is a refusal."""
    rows = []
    for member, data in members.items():
        for i, r in enumerate(_csv(member, data), 1):
            where = f"{member}: row {i}"
            score = _field(r, "human_score", where)
            if score not in ("0", "1"):
                raise DatasetError(f"{where}: human_score must be 0 or 1, got {score!r}")
            rows.append(
                {
                    "prompt": _field(r, "objective", where),
                    "response": _field(r, "assistant_response", where),
                    "label": int(score),
                    "file": PurePosixPath(member).name,
                }
            )
    return rows


def harm_labels(members: Members, options: dict[str, Any]) -> list[Row]:
    """Human-scored harm of (objective, response) pairs. Each file's one rater scores
    harm from 0 to 1 in steps of 0.25 (a 1-5 Likert scale); label 1 = harmful, a score
    at or above ``options["harmful_at"]``. The raw score is kept."""
    at = float(options["harmful_at"])
    rows = []
    for member, data in members.items():
        for i, r in enumerate(_csv(member, data), 1):
            where = f"{member}: row {i}"
            raw = r.get("human_score_1", r.get("human_score"))
            if raw is None:
                raise DatasetError(f"{where}: missing column 'human_score_1'")
            try:
                score = float(raw)
            except ValueError:
                raise DatasetError(f"{where}: human score must be a number from 0 to 1, got {raw!r}") from None
            if not 0 <= score <= 1:
                raise DatasetError(f"{where}: human score must be from 0 to 1, got {raw!r}")
            rows.append(
                {
                    "prompt": _field(r, "objective", where),
                    "response": _field(r, "assistant_response", where),
                    "label": int(score >= at),
                    "score": score,
                    "category": _field(r, "harm_category", where),
                }
            )
    return rows


def python_string_lists(members: Members, options: dict[str, Any]) -> list[Row]:
    """String lists assigned to ``substrings`` in the named classes, read with ``ast`` (never run)."""
    wanted: list[str] = options["classes"]
    rows = []
    for member, data in members.items():
        found: dict[str, list[str]] = {}
        for node in ast.parse(_text(member, data)).body:
            if isinstance(node, ast.ClassDef) and node.name in wanted:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Assign) and any(getattr(t, "id", None) == "substrings" for t in sub.targets):
                        found[node.name] = ast.literal_eval(sub.value)
        for cls in wanted:
            if cls not in found:
                raise DatasetError(f"{member}: no string list 'substrings' in class {cls!r}")
            rows.extend({"text": s, "list": cls} for s in found[cls])
    return rows


def mmlu(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            parts = re.split(r"(?:^|\n)([A-D])\. ", _field(r, "options", where))
            letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
            m = re.match(r"([A-D])\. ", _field(r, "answer", where))
            if parts[0].strip() or letters != list("ABCD") or not m:
                raise DatasetError(f"{where}: options or answer not in the 'A. ... D. ...' form")
            rows.append({"question": _field(r, "question", where), "choices": texts, "answer": m.group(1)})
    return rows


def question_answers(members: Members, options: dict[str, Any]) -> list[Row]:
    """``{question, answer: [...]}`` -> question + list of acceptable answers."""
    rows = []
    for member, data in members.items():
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            answers = _field(r, "answer", where)
            answers = answers if isinstance(answers, list) else [answers]
            rows.append({"question": _field(r, "question", where), "answers": answers})
    return rows


def asdiv(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            passage, question = _field(r, "passage", where).strip(), _field(r, "question", where).strip()
            answer = str(_field(r, "answer", where)).strip()
            rows.append(
                {
                    "question": f"{passage} {question}".strip(),
                    "answer": answer,
                    # None for the ~6% of answers that are not numbers ("Yes", "3:30 p.m.")
                    "answer_value": _number(answer),
                }
            )
    return rows


TOXICITY_SCORES = (
    "toxicity",
    "severe_toxicity",
    "profanity",
    "insult",
    "identity_attack",
    "threat",
    "sexually_explicit",
    "flirtation",
)


def toxicity(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            rows.append({"text": _field(r, "text", where), **{k: float(_field(r, k, where)) for k in TOXICITY_SCORES}})
    return rows


def self_instruct(members: Members, options: dict[str, Any]) -> list[Row]:
    rows = []
    for member, data in members.items():
        for i, r in enumerate(jsonl_records(member, data), 1):
            where = f"{member}:{i}"
            instances = _field(r, "instances", where) or [{}]
            rows.append(
                {
                    "instruction": _field(r, "instruction", where),
                    "input": instances[0].get("input", ""),
                    "output": instances[0].get("output", ""),
                    "is_classification": bool(r.get("is_classification", False)),
                    "task": r.get("name", ""),
                }
            )
    return rows


# Runs in a fresh interpreter started with -I -S: standard library only, so the
# archive's files are the only third-party code on sys.path. It reproduces
# reasoning_gym's GSMSymbolicDataset.__getitem__ (task choice and per-item seeding)
# without the prompt suffix that class appends.
_GSM_CHILD = r"""
import json, sys
from random import Random
root, size, seed, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, root)
from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99
gens = {}
for mod in (generators_00_49, generators_50_99):
    for name in dir(mod):
        if name.startswith("generate_"):
            gens[int(name[len("generate_"):])] = getattr(mod, name)
choice = Random(seed).choices(tasks, k=size)
for idx in range(size):
    ex = gens[choice[idx]](Random(seed + idx), 1.0)
    meta = ex["metadata"]
    value = meta["answer_value"]
    value = int(value) if float(value).is_integer() else float(value)
    print(json.dumps({"question": ex["question"], "answer": value, "solution": meta["answer_cot"],
                      "generator": choice[idx], "index": idx}))
"""

_GSM_DIR = "reasoning_gym/arithmetic/gsm_symbolic/"


def gsm_symbolic(members: Members, options: dict[str, Any]) -> list[Row]:
    """GSM8K-style problems with exact answers from reasoning-gym's gsm_symbolic generators.

    Why not ``import reasoning_gym``: its package ``__init__`` imports all thirteen
    task families, which pull in matplotlib, sympy and three source-only builds
    (pycosat, cellpylib, zss), while these generators need only the standard
    library. So the three files they use are written to a temporary folder and run
    in an isolated interpreter; the list of generators upstream marks as correct
    (``tasks_ok``) is read from its source with ``ast``.
    """
    size, seed = int(options.get("size", 1000)), int(options.get("seed", 0))
    by_name = {PurePosixPath(m).name: (m, d) for m, d in members.items()}
    try:
        member, source = by_name["gsm_symbolic.py"]
    except KeyError:
        raise DatasetError("gsm-symbolic: the archive member gsm_symbolic.py is not listed") from None
    tasks = None
    for node in ast.parse(_text(member, source)).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "tasks_ok" for t in node.targets):
            tasks = ast.literal_eval(node.value)
    if not tasks:
        raise DatasetError(f"{member}: no 'tasks_ok' list")
    with tempfile.TemporaryDirectory(prefix="failforge-gsm-") as tmp:
        for m, data in members.items():
            if m != member:
                target = Path(tmp) / m
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _GSM_CHILD, tmp, str(size), str(seed), json.dumps(tasks)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DatasetError(f"gsm-symbolic: the problem generators failed: {last}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


PARSERS: dict[str, Parser] = {
    "lines": lines,
    "donotanswer": donotanswer,
    "pyrit_seeds": pyrit_seeds,
    "harmbench_csv": harmbench_csv,
    "strongreject": strongreject,
    "refusal_labels": refusal_labels,
    "harm_labels": harm_labels,
    "python_string_lists": python_string_lists,
    "mmlu": mmlu,
    "question_answers": question_answers,
    "asdiv": asdiv,
    "toxicity": toxicity,
    "self_instruct": self_instruct,
    "gsm_symbolic": gsm_symbolic,
}
