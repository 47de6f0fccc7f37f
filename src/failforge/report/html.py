"""`failforge report`: one self-contained HTML page for one run or several.

Model output is untrusted text: it only ever reaches the page through Jinja's
autoescaping (or ``html.escape`` inside the SVG), and never enters the script.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from failforge.errors import ConfigError
from failforge.judges.measured import Status, confusion_text, meta_status
from failforge.report import assets
from failforge.report.compare import Chart, RunCurves, numeric_metric_names, overlay_charts, run_charts
from failforge.report.summary import CONFIG_FILE, RunSummary, open_store, summarize_store
from failforge.run.records import AttemptRecord

#: failure examples shown per run; the rest are counted and reachable through `failforge export`
DEFAULT_MAX_EXAMPLES = 500


class JudgeRow(BaseModel):
    id: str
    version: str = ""
    judged: int = 0
    failures: int = 0
    unscorable: int = 0
    #: on human labels (judges/measured.py); None unless the status is "measured"
    error_rate: float | None = None
    status: Status = "not measured"
    #: the labelled data file's name, the rows in it, and where the number comes from
    data: str = ""
    rows: int | None = None
    source: str = ""
    #: "TP 20 FN 1 FP 2 TN 38" on the labelled data (fail = positive)
    confusion: str = ""
    #: why it is stale or not measured
    note: str = ""
    #: the one line shown beside the failure rates
    headline: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def error_text(self) -> str:
        """The error rate as the comparison table shows it."""
        if self.status == "measured" and self.error_rate is not None:
            on = f"{self.rows} rows" if self.rows is not None else "human labels"
            return f"{self.error_rate:.1%} ({self.data + ', ' if self.data else ''}{on})"
        return self.status if self.status == "stale" else "not measured"


class RunData(BaseModel):
    label: str
    summary: RunSummary
    config_text: str = ""
    metrics: dict[int, dict[str, Any]] = Field(default_factory=dict)
    #: run-level results (the store's iteration 0), e.g. the held-out evaluation
    results: dict[str, Any] = Field(default_factory=dict)
    train_steps: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[AttemptRecord] = Field(default_factory=list)
    failures_total: int = 0
    judges: list[JudgeRow] = Field(default_factory=list)
    #: per model role: completion requests, retries, faults by kind, refused requests (store meta)
    backend_events: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: items a model server refused to answer: kind, instruction, error
    model_errors: list[dict[str, Any]] = Field(default_factory=list)


def load_run(run_dir: str | Path, max_examples: int = DEFAULT_MAX_EXAMPLES) -> RunData:
    run_dir = Path(run_dir)
    store = open_store(run_dir)
    try:
        summary = summarize_store(run_dir, store)
        meta = store.meta()
        attempts = [_attempt(row) for row in store.records(AttemptRecord.KIND)]
        failures = [a for a in attempts if a.failed]
        all_metrics = store.metrics()
        cfg = run_dir / CONFIG_FILE
        return RunData(
            label=summary.name or run_dir.name,
            summary=summary,
            config_text=cfg.read_text(encoding="utf-8", errors="replace") if cfg.is_file() else "",
            metrics={it: m for it, m in all_metrics.items() if it >= 1},
            results=all_metrics.get(0, {}),
            train_steps=store.train_steps(),
            failures=failures[:max_examples],
            failures_total=len(failures),
            judges=judge_rows(meta.get("judges") or {}, attempts),
            backend_events=meta.get("backend_events") or {},
            model_errors=model_errors(store),
        )
    finally:
        store.close()


def model_errors(store) -> list[dict[str, Any]]:
    """Judged items whose answer the model server refused (their label is unscorable)."""
    out = []
    for kind in ("attempt", "eval"):
        for row in store.records(kind):
            if row.get("error"):
                where = row.get("stage") or f"iteration {row.get('_iteration')}"
                out.append({"kind": kind, "where": where, "instruction": row.get("instruction", ""), "error": row["error"]})
    return out


_MEASURE_KEYS = frozenset(
    {"version", "status", "source", "error_rate", "accuracy", "data", "data_sha256", "rows", "scored", "unscorable", "confusion", "note"}
)


def judge_rows(meta_judges: dict[str, Any], attempts: list[AttemptRecord]) -> list[JudgeRow]:
    """Each judge's verdict counts from the records, and its error rate on human
    labels from the run's meta (``record_judges``): shown only when measured and not stale."""
    counts: dict[str, Counter] = {}
    versions: dict[str, str] = {}
    for a in attempts:
        jid, _, ver = (a.provenance.judge or "unknown").partition("@")
        counts.setdefault(jid, Counter())[a.label] += 1
        versions.setdefault(jid, ver)
    rows = []
    for jid in list(meta_judges) + sorted(set(counts) - set(meta_judges)):
        info = meta_judges.get(jid) or {}
        info = info if isinstance(info, dict) else {"value": info}
        c = counts.get(jid, Counter())
        status = meta_status(info)
        er = info.get("error_rate")
        er = float(er) if status == "measured" and isinstance(er, (int, float)) and not isinstance(er, bool) else None
        n = info.get("rows")
        row = JudgeRow(
            id=jid,
            version=str(info.get("version") or versions.get(jid, "")),
            judged=sum(c.values()),
            failures=c["fail"],
            unscorable=c["unscorable"],
            error_rate=er,
            status=status if er is not None or status != "measured" else "not measured",
            data=Path(str(info["data"])).name if info.get("data") else "",
            rows=n if isinstance(n, int) and not isinstance(n, bool) else None,
            source=str(info.get("source") or ""),
            confusion=confusion_text(info.get("confusion")) if isinstance(info.get("confusion"), dict) else "",
            note=str(info.get("note") or ""),
            extra={k: v for k, v in info.items() if k not in _MEASURE_KEYS},
        )
        row.headline = judge_headline(row)
        rows.append(row)
    return rows


def judge_headline(j: JudgeRow) -> str:
    """'judge math@2: error rate 3.3% on 61 human-labelled rows (math_answers.jsonl)'."""
    name = f"judge {j.id}@{j.version}" if j.version else f"judge {j.id}"
    if j.status == "measured" and j.error_rate is not None:
        on = f"{j.rows} human-labelled rows" if j.rows is not None else "human labels"
        detail = ", ".join(x for x in (j.data, j.source) if x)
        return f"{name}: error rate {j.error_rate:.1%} on {on}" + (f" ({detail})" if detail else "")
    if j.status == "stale":
        return f"{name}: error rate stale, not used ({j.note or 'the labelled data changed since it was measured'})"
    return f"{name}: error rate not measured (failforge judge-eval --judge {j.id} --data FILE --save)"


def render_report(run_dirs: list[str | Path], max_examples: int = DEFAULT_MAX_EXAMPLES) -> str:
    if not run_dirs:
        raise ConfigError("report: give at least one run directory")
    runs = [load_run(d, max_examples) for d in run_dirs]
    _unique_labels(runs)
    curves = [RunCurves(label=r.label, metrics=r.metrics, train_steps=r.train_steps) for r in runs]
    import markupsafe

    def safe(charts: list[Chart]) -> list[dict[str, Any]]:
        # The SVG is built with every text escaped (plots.py), so it is marked safe here.
        return [{"id": c.id, "title": c.title, "svg": markupsafe.Markup(c.svg)} for c in charts]

    from failforge import __version__

    ctx = {
        "css": markupsafe.Markup(assets.css()),
        "js": markupsafe.Markup(assets.js()),
        "version": __version__,
        "generated": fmt_time(time.time()),
        "runs": [
            {
                "data": r,
                "s": r.summary,
                "charts": safe(run_charts(c)),
                "metric_names": numeric_metric_names(r.metrics),
                "iterations": sorted({a.provenance.iteration for a in r.failures if a.provenance.iteration is not None}),
                "arms": arm_table(r.results),
            }
            for r, c in zip(runs, curves)
        ],
        "overlay": safe(overlay_charts(curves)) if len(runs) > 1 else [],
        "compare_rows": compare_rows(runs) if len(runs) > 1 else [],
        "fmt_time": fmt_time,
        "fmt_duration": fmt_duration,
        "fmt_value": fmt_value,
    }
    return assets.environment().get_template("report.html.j2").render(**ctx)


def write_report(run_dirs: list[str | Path], out: str | Path, max_examples: int = DEFAULT_MAX_EXAMPLES) -> Path:
    """Render and write atomically: a reader never sees half a page."""
    out = Path(out)
    page = render_report(run_dirs, max_examples)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def compare_rows(runs: list[RunData]) -> list[tuple[str, list[str]]]:
    """The side-by-side table: one row per quantity, one column per run."""
    def last(r: RunData, name: str) -> Any:
        for it in sorted(r.metrics, reverse=True):
            if name in r.metrics[it]:
                return r.metrics[it][name]
        return None

    rows: list[tuple[str, list[str]]] = [
        ("method", [r.summary.method for r in runs]),
        ("task", [r.summary.task for r in runs]),
        ("status", [r.summary.status_label for r in runs]),
        ("iterations", [str(r.summary.iterations) for r in runs]),
        ("wall time", [fmt_duration(r.summary.wall_seconds) for r in runs]),
        ("model calls", [f"{r.summary.calls:,}" for r in runs]),
        ("tokens", [f"{r.summary.tokens:,}" for r in runs]),
        ("failures found", [f"{r.failures_total:,}" for r in runs]),
    ]
    judge_ids: list[str] = []
    for r in runs:
        judge_ids += [j.id for j in r.judges if j.id not in judge_ids]
    for jid in judge_ids:
        cells = []
        for r in runs:
            j = next((x for x in r.judges if x.id == jid), None)
            cells.append("\u2014" if j is None else (f"v{j.version}: " if j.version else "") + j.error_text)
        rows.append((f"judge {jid} error rate", cells))
    roles = []
    for r in runs:
        roles += [role for role in r.summary.models if role not in roles]
    for role in roles:
        rows.append((f"{role} fingerprint", [str((r.summary.models.get(role) or {}).get("fingerprint", "")) for r in runs]))
    names: list[str] = []
    for r in runs:
        names += [n for n in numeric_metric_names(r.metrics) if n not in names]
    for n in names:
        if n in ("failure_rate_lo", "failure_rate_hi"):
            continue  # shown with failure_rate
        if n == "failure_rate":
            vals = []
            for r in runs:
                v, lo, hi = last(r, n), last(r, "failure_rate_lo"), last(r, "failure_rate_hi")
                vals.append(fmt_value(v) + (f" [{fmt_value(lo)}, {fmt_value(hi)}]" if lo is not None and hi is not None else ""))
            rows.append(("last failure_rate [interval]", vals))
            continue
        rows.append((f"last {n}", [fmt_value(last(r, n)) for r in runs]))
    return rows


class ArmTable(BaseModel):
    """Results stored as ``arms.<arm>.<score>`` (with ``_lo``/``_hi`` intervals), one
    row per arm: the comparison of a method's arms on the same held-out items."""

    columns: list[str]
    rows: list[tuple[str, list[str]]]


def arm_table(results: dict[str, Any]) -> ArmTable | None:
    scores: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        head, _, rest = key.partition(".")
        arm, _, score = rest.partition(".")
        if head == "arms" and arm and score:
            scores.setdefault(arm, {})[score] = value
    if not scores:
        return None
    columns = sorted({c for s in scores.values() for c in s if not c.endswith(("_lo", "_hi"))})
    rows = []
    for arm, s in scores.items():
        cells = []
        for c in columns:
            v, lo, hi = s.get(c), s.get(c + "_lo"), s.get(c + "_hi")
            cells.append(fmt_value(v) + (f" [{fmt_value(lo)}, {fmt_value(hi)}]" if v is not None and lo is not None and hi is not None else ""))
        rows.append((arm, cells))
    return ArmTable(columns=columns, rows=rows)


def fmt_time(t: float | None) -> str:
    if t is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "\u2014"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def fmt_value(v: Any) -> str:
    if v is None:
        return "\u2014"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _attempt(row: dict[str, Any]) -> AttemptRecord:
    rec = AttemptRecord.model_validate({k: v for k, v in row.items() if not k.startswith("_")})
    if rec.provenance.iteration is None and row.get("_iteration") is not None:
        rec.provenance.iteration = row["_iteration"]
    return rec


def _unique_labels(runs: list[RunData]) -> None:
    counts = Counter(r.label for r in runs)
    for r in runs:
        if counts[r.label] > 1:
            r.label = r.summary.run_dir
