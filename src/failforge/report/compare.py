"""Which curves a report draws, for one run or several overlaid.

Known metrics come first in a fixed order and grouping; any other numeric metric
a method records gets a chart of its own, so new metrics show up without a change
here.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from failforge.report.plots import Series, color, line_chart


class ChartSpec(BaseModel):
    id: str
    title: str
    metrics: list[str]
    #: (lo, hi) metric names drawn as an interval around the first metric
    band: tuple[str, str] | None = None
    y_label: str = ""


KNOWN_CHARTS: list[ChartSpec] = [
    ChartSpec(id="failure_rate", title="Failure rate (95% interval)", metrics=["failure_rate"], band=("failure_rate_lo", "failure_rate_hi"), y_label="rate"),
    ChartSpec(id="unique_failures", title="Unique failures", metrics=["unique_failures"], y_label="count"),
    ChartSpec(id="failures_per_1k_calls", title="Failures per 1k model calls", metrics=["failures_per_1k_calls"], y_label="per 1k calls"),
    ChartSpec(id="diversity", title="Diversity", metrics=["self_bleu", "inner_similarity", "novelty"], y_label="score"),
    ChartSpec(id="reward_per_step", title="Reward per step: the policy over training, the random policy's level", metrics=["reward_per_step", "random_policy_reward_per_step"], y_label="reward"),
    ChartSpec(id="calls", title="Model calls", metrics=["calls"], y_label="calls"),
    ChartSpec(id="tokens", title="Tokens", metrics=["tokens"], y_label="tokens"),
    ChartSpec(id="unscorable", title="Unscorable verdicts", metrics=["unscorable"], y_label="count"),
]
#: titles of single metrics when each gets its own chart (overlays)
TITLES: dict[str, str] = {
    "failure_rate": "Failure rate (95% interval)",
    "unique_failures": "Unique failures",
    "failures_per_1k_calls": "Failures per 1k model calls",
    "self_bleu": "Self-BLEU (lower = more diverse)",
    "inner_similarity": "Inner similarity (lower = more diverse)",
    "novelty": "Novelty against the seeds",
    "reward_per_step": "Reward per step (TeaMs-RL policy)",
    "random_policy_reward_per_step": "Random policy's reward per step",
    "calls": "Model calls",
    "tokens": "Tokens",
    "unscorable": "Unscorable verdicts",
}
DASHES: tuple[str, ...] = ("", "6 4", "2 3", "10 3 2 3")
#: metrics that count things: their axes get whole-number ticks
COUNTS: frozenset[str] = frozenset({"unique_failures", "calls", "tokens", "unscorable"})
KNOWN_METRICS: list[str] = [m for c in KNOWN_CHARTS for m in (*c.metrics, *(c.band or ()))]


class Chart(BaseModel):
    id: str
    title: str
    svg: str


class RunCurves(BaseModel):
    """What the charts need from one run."""

    label: str
    metrics: dict[int, dict[str, Any]] = Field(default_factory=dict)
    train_steps: list[dict[str, Any]] = Field(default_factory=list)


def numeric_metric_names(metrics: dict[int, dict[str, Any]]) -> list[str]:
    """Names with at least one finite numeric value: known ones first, then the rest by name."""
    present = {n for vals in metrics.values() for n, v in vals.items() if _is_num(v)}
    known = [m for m in KNOWN_METRICS if m in present]
    return known + sorted(present - set(KNOWN_METRICS))


def metric_points(metrics: dict[int, dict[str, Any]], name: str) -> list[tuple[float, float]]:
    return [(float(it), float(vals[name])) for it, vals in sorted(metrics.items()) if _is_num(vals.get(name))]


def metric_band(metrics: dict[int, dict[str, Any]], lo: str, hi: str) -> list[tuple[float, float, float]]:
    return [
        (float(it), float(vals[lo]), float(vals[hi]))
        for it, vals in sorted(metrics.items())
        if _is_num(vals.get(lo)) and _is_num(vals.get(hi))
    ]


def run_charts(run: RunCurves) -> list[Chart]:
    """Charts of one run: the known groups, other metrics one each, then training loss."""
    charts: list[Chart] = []
    names = numeric_metric_names(run.metrics)
    for spec in KNOWN_CHARTS:
        series = [
            Series(
                name=m,
                points=metric_points(run.metrics, m),
                color=color(i),
                band=metric_band(run.metrics, *spec.band) if spec.band and i == 0 else [],
            )
            for i, m in enumerate(spec.metrics)
            if m in names
        ]
        if series:
            counts = set(spec.metrics) <= COUNTS
            svg = line_chart(spec.title, series, chart_id=spec.id, y_label=spec.y_label, integer_y=counts)
            charts.append(Chart(id=spec.id, title=spec.title, svg=svg))
    for m in names:
        if m not in KNOWN_METRICS:
            s = Series(name=m, points=metric_points(run.metrics, m), color=color(0))
            charts.append(Chart(id=m, title=m, svg=line_chart(m, [s], chart_id=m)))
    loss = loss_series(run.train_steps)
    if loss:
        charts.append(Chart(id="train_loss", title="Training loss", svg=line_chart("Training loss per step", loss, chart_id="train_loss", x_label="step", y_label="loss")))
    return charts


def overlay_charts(runs: list[RunCurves]) -> list[Chart]:
    """One chart per metric with every run's curve on it (one colour per run)."""
    charts: list[Chart] = []
    seen: list[str] = []
    for r in runs:
        seen += [n for n in numeric_metric_names(r.metrics) if n not in seen]
    order = [m for m in KNOWN_METRICS if m in seen] + [m for m in seen if m not in KNOWN_METRICS]
    band_of = {spec.metrics[0]: spec.band for spec in KNOWN_CHARTS if spec.band}
    banded = {n for b in band_of.values() if b for n in b}
    for m in order:
        if m in banded:
            continue  # drawn as the band of its metric
        band = band_of.get(m)
        series = [
            Series(
                name=r.label,
                points=metric_points(r.metrics, m),
                color=color(i),
                band=metric_band(r.metrics, *band) if band else [],
            )
            for i, r in enumerate(runs)
        ]
        if any(s.points for s in series):
            title = _title_of(m)
            charts.append(Chart(id=m, title=title, svg=line_chart(title, series, chart_id=m, integer_y=m in COUNTS)))
    loss: list[Series] = []
    for i, r in enumerate(runs):
        for j, s in enumerate(loss_series(r.train_steps)):
            # colour = run, dash pattern = model version
            loss.append(s.model_copy(update={"name": f"{r.label}: {s.name}", "color": color(i), "dash": DASHES[j % len(DASHES)]}))
    if loss:
        charts.append(Chart(id="train_loss", title="Training loss", svg=line_chart("Training loss per step", loss, chart_id="train_loss", x_label="step", y_label="loss")))
    return charts


def loss_series(train_steps: list[dict[str, Any]]) -> list[Series]:
    """One loss curve per trained model version, in training order."""
    by_version: dict[str, list[tuple[float, float]]] = {}
    for row in train_steps:
        if _is_num(row.get("loss")) and _is_num(row.get("step")):
            by_version.setdefault(str(row.get("model_version")), []).append((float(row["step"]), float(row["loss"])))
    return [Series(name=v, points=pts, color=color(i)) for i, (v, pts) in enumerate(by_version.items())]


def _title_of(metric: str) -> str:
    return TITLES.get(metric, metric.replace("_", " "))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
