"""Measured judges: a judge's error rate on human labels, saved, found again, and
written into a run.

A judge-eval result is keyed by judge id, judge version and the sha256 of the
labelled data file, and saved as one JSON file in a store directory (the CLI's
default is ``~/.cache/failforge/judge-evals/``, or ``$FAILFORGE_JUDGE_EVALS``;
every function here takes the directory as an argument). A saved result whose data
file has changed or gone since is *stale*: it is reported as stale and its numbers
are never used.

At run start a method writes what it knows about each judge into the run store's
meta, under ``judges.<id>``::

    from failforge.judges.measured import latest_result, measure, packaged_labels, record_judges

    if judge.id == "math":  # a cheap rule-based judge: measure it now
        entry = measure(judge, packaged_labels("math_answers.jsonl"), instruction_col="instruction")
    else:  # a saved `failforge judge-eval --save`, or None: not measured
        entry = latest_result(judge.id, judge.version, store_dir)
    record_judges(store, {judge.id: entry}, versions={judge.id: judge.version})

The report and the end-of-run summary read that meta (``describe``).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from failforge.errors import DatasetError, FailforgeError
from failforge.judges.base import Judge
from failforge.judges.labelled import JudgeEvalReport, JudgeScores, evaluate, load_labelled

if TYPE_CHECKING:
    from failforge.run.store import RunStore

ENV_VAR = "FAILFORGE_JUDGE_EVALS"
Source = Literal["measured at run start", "saved judge-eval"]
Status = Literal["measured", "not measured", "stale"]


class MeasuredResult(JudgeScores):
    """A judge's scores on one labelled data file (the saved JSON, and what callers get);
    ``data`` is the file's absolute path."""

    #: the judge as given to judge-eval (``--judge``), e.g. "refusal:refusal"
    spec: str = ""
    data_sha256: str
    #: 1 - accuracy over scored rows; None when no row was scored
    error_rate: float | None
    measured_at: float
    saved_at: float | None = None
    source: Source = "saved judge-eval"
    #: set on loading: the data file changed or disappeared since the result was saved
    stale: bool = False
    stale_reason: str = ""

    @property
    def data_name(self) -> str:
        return Path(self.data).name


def sha256_file(path: str | os.PathLike) -> str:
    """``models.base.file_sha256``, with an unreadable file as a one-line error."""
    from failforge.models.base import file_sha256

    try:
        return file_sha256(str(path))
    except OSError as e:
        raise DatasetError(f"--data {path}: {e.strerror or e}") from e


def default_store_dir(env: Mapping[str, str]) -> Path:
    """``env[FAILFORGE_JUDGE_EVALS]`` if set, else ``~/.cache/failforge/judge-evals``."""
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    return Path("~/.cache/failforge/judge-evals").expanduser()


def packaged_labels(name: str) -> Path:
    """A labelled data file shipped with failforge (``resources/labels/<name>``)."""
    path = Path(str(resources.files("failforge").joinpath("resources", "labels", name)))
    if not path.is_file():
        raise DatasetError(f"packaged labels {name}: not shipped with this failforge (no {path})")
    return path


def from_report(report: JudgeEvalReport, data_path: str | os.PathLike, spec: str = "", source: Source = "saved judge-eval") -> MeasuredResult:
    """A judge-eval report, with the data file's hash and the error rate."""
    data = Path(data_path).resolve()
    scores = report.model_dump(include=set(JudgeScores.model_fields))
    return MeasuredResult(
        **{**scores, "data": str(data)},
        spec=spec,
        data_sha256=sha256_file(data),
        error_rate=None if report.accuracy is None else 1.0 - report.accuracy,
        measured_at=time.time(),
        source=source,
    )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def result_file(judge_id: str, judge_version: str, data_sha256: str, store_dir: str | os.PathLike) -> Path:
    """``<judge-id>@<version>--<sha256[:16]>.json``, with characters unsafe in a file name as ``_``."""
    return Path(store_dir) / f"{_safe(judge_id)}@{_safe(judge_version)}--{data_sha256[:16]}.json"


def save_result(report: JudgeEvalReport, data_path: str | os.PathLike, spec: str, store_dir: str | os.PathLike) -> Path:
    """Save a judge-eval result atomically; a later save for the same judge, version
    and data replaces it. Returns the file written."""
    result = from_report(report, data_path, spec=spec, source="saved judge-eval")
    result.saved_at = time.time()
    path = result_file(result.judge, result.judge_version, result.data_sha256, store_dir)
    payload = result.model_dump_json(indent=2, exclude={"stale", "stale_reason", "source"})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise FailforgeError(f"judge-eval store {path.parent}: {e.strerror or e}") from e
    return path


def _staleness(result: MeasuredResult) -> str:
    data = Path(result.data)
    if not data.is_file():
        return f"{result.data_name} is gone"
    if sha256_file(data) != result.data_sha256:
        return f"{result.data_name} changed since the judge-eval was saved"
    return ""


def load_results(judge_id: str, judge_version: str, store_dir: str | os.PathLike) -> list[MeasuredResult]:
    """Every saved result for this judge id and version, newest first, each checked
    against its data file (``stale`` set when the file changed or is gone).
    Unreadable files in the store are skipped."""
    store = Path(store_dir)
    if not store.is_dir():
        return []
    prefix = f"{_safe(judge_id)}@{_safe(judge_version)}--"
    out = []
    for path in store.glob(f"{prefix}*.json"):
        try:
            r = MeasuredResult.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError):
            continue
        if (r.judge, r.judge_version) != (judge_id, judge_version):
            continue  # another id that sanitises to the same file name
        reason = _staleness(r)
        out.append(r.model_copy(update={"source": "saved judge-eval", "stale": bool(reason), "stale_reason": reason}))
    return sorted(out, key=lambda r: r.saved_at or r.measured_at, reverse=True)


def latest_result(judge_id: str, judge_version: str, store_dir: str | os.PathLike) -> MeasuredResult | None:
    """The newest saved result for this judge id and version whose data file is
    unchanged; when every saved result is stale, the newest one with ``stale=True``
    (its numbers must not be used); None when nothing was saved."""
    results = load_results(judge_id, judge_version, store_dir)
    fresh = [r for r in results if not r.stale]
    if fresh:
        return fresh[0]
    return results[0] if results else None


def measure(judge: Judge, data_path: str | os.PathLike, **load_kwargs: Any) -> MeasuredResult:
    """Evaluate ``judge`` on a labelled file now (``load_kwargs`` go to
    ``load_labelled``: text_col, label_col, instruction_col, reference_col, positive)."""
    rows = load_labelled(data_path, judge, **load_kwargs)
    report, _ = evaluate(judge, rows, data=str(data_path))
    return from_report(report, data_path, source="measured at run start")


# --- the run's meta ------------------------------------------------------------------


class JudgeMeta(BaseModel):
    """One judge's entry in a run's meta (``judges.<id>``)."""

    version: str = ""
    status: Status = "not measured"
    source: Source | None = None
    error_rate: float | None = None
    accuracy: float | None = None
    #: the labelled data file (absolute path) and its hash
    data: str | None = None
    data_sha256: str | None = None
    rows: int | None = None
    scored: int | None = None
    unscorable: int | None = None
    confusion: dict[str, dict[str, int]] | None = None
    spec: str = ""
    #: why it is not measured, or why it is stale
    note: str = ""


def judge_meta(entry: MeasuredResult | str | None, version: str = "") -> JudgeMeta:
    """The meta entry for a result (measured, or stale without numbers), a reason
    it was not measured (a string), or None (not measured)."""
    if entry is None or isinstance(entry, str):
        return JudgeMeta(version=version, status="not measured", note=entry or "")
    base = dict(
        version=entry.judge_version or version,
        source=entry.source,
        data=entry.data,
        data_sha256=entry.data_sha256,
        rows=entry.rows,
        spec=entry.spec,
    )
    if entry.stale:
        return JudgeMeta(**base, status="stale", note=entry.stale_reason or "the data file changed")
    if entry.error_rate is None:
        return JudgeMeta(**base, status="not measured", unscorable=entry.unscorable, note=f"no row of {entry.data_name} was scored")
    return JudgeMeta(
        **base,
        status="measured",
        error_rate=entry.error_rate,
        accuracy=entry.accuracy,
        scored=entry.scored,
        unscorable=entry.unscorable,
        confusion=entry.confusion,
    )


def record_judges(
    store: RunStore, entries: Mapping[str, MeasuredResult | str | None], versions: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Write ``judges.<id>`` into a RunStore's meta for each entry (see ``judge_meta``)
    and return the whole ``judges`` meta. Judges already recorded and not in
    ``entries`` are kept, and so are keys of an entry that are not measurement fields. The version comes from the result, else ``versions[id]``,
    else the version already recorded for that judge."""
    current = store.meta().get("judges") or {}
    judges = {k: v for k, v in current.items()} if isinstance(current, dict) else {}
    for jid, entry in entries.items():
        old = judges.get(jid) if isinstance(judges.get(jid), dict) else {}
        version = (versions or {}).get(jid) or str(old.get("version") or "")
        judges[jid] = {**old, **judge_meta(entry, version).model_dump()}
    store.set_meta(judges=judges)
    return judges


def meta_status(info: Mapping[str, Any]) -> Status:
    """The status of a meta entry; entries written before statuses existed count as
    measured when they hold a number."""
    status = info.get("status")
    if status in ("measured", "not measured", "stale"):
        return status
    return "measured" if _number(info.get("error_rate")) is not None else "not measured"


def confusion_text(confusion: Mapping[str, Mapping[str, int]] | None) -> str:
    """"TP 20 FN 1 FP 2 TN 38 unscorable 0" (fail is the positive class)."""
    if not confusion:
        return ""
    f, p = confusion.get("fail") or {}, confusion.get("pass") or {}
    uns = int(f.get("unscorable", 0)) + int(p.get("unscorable", 0))
    return (
        f"TP {f.get('fail', 0)} FN {f.get('pass', 0)} FP {p.get('fail', 0)} TN {p.get('pass', 0)}"
        + (f" unscorable {uns}" if uns else "")
    )


def describe(judge_id: str, info: Mapping[str, Any]) -> str:
    """One line for the end-of-run summary: the error rate and what it was measured
    on, "stale: ...", or "not measured: run failforge judge-eval ... --save"."""
    status = meta_status(info)
    data = Path(str(info.get("data"))).name if info.get("data") else ""
    hint = f"failforge judge-eval --judge {judge_id} --data FILE --save"
    if status == "stale":
        return f"stale: {info.get('note') or 'the data file changed'}; run {hint} again"
    er = _number(info.get("error_rate"))
    if status == "measured" and er is not None:
        rows = info.get("rows")
        bits = [f"{rows} human-labelled rows" if rows is not None else "human labels"]
        if info.get("unscorable"):
            bits.append(f"{info['unscorable']} unscorable")
        if data:
            bits.append(data)
        if info.get("source"):
            bits.append(str(info["source"]))
        return f"error rate {er:.3f} ({', '.join(bits)})"
    note = info.get("note")
    return f"not measured{f' ({note})' if note else ''}: run {hint}"


def summary_lines(meta_judges: Mapping[str, Any] | None) -> dict[str, str]:
    """``{"judge math@2": describe(...)}`` for each judge in a run's ``judges`` meta."""
    out = {}
    for jid, info in (meta_judges or {}).items():
        info = info if isinstance(info, Mapping) else {}
        version = info.get("version")
        out[f"judge {jid}@{version}" if version else f"judge {jid}"] = describe(jid, info)
    return out


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
