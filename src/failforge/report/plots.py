"""Line charts as inline SVG, written by hand.

Why by hand: the report must open with no network, so a JS charting library
would have to be vendored (hundreds of kB) and matplotlib is a heavy dependency
for a handful of small line plots. A line chart with an interval band, ticks and
a legend is ~150 lines of SVG text, and it is crisp at any zoom. Every piece of
text that reaches the SVG goes through ``html.escape``.
"""

from __future__ import annotations

import math
from html import escape

from pydantic import BaseModel, Field

#: colour-blind-safe palette (Okabe-Ito), in the order series get them
PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C564B")


class Series(BaseModel):
    name: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    #: an interval around the line: (x, lo, hi)
    band: list[tuple[float, float, float]] = Field(default_factory=list)
    #: SVG stroke-dasharray, e.g. "6 4"; empty = solid
    dash: str = ""


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering [lo, hi]; whole steps for counts."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, step)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.3g}"


def line_chart(
    title: str,
    series: list[Series],
    *,
    chart_id: str = "",
    x_label: str = "iteration",
    y_label: str = "",
    width: int = 560,
    height: int = 280,
    integer_x: bool = True,
    integer_y: bool = False,
    y_range: tuple[float, float] | None = None,
) -> str:
    """One SVG line chart; ``series`` with no points are left out of the legend."""
    series = [s for s in series if s.points]
    ml, mr, mb = 58, 16, 42  # margins: room for tick labels and the x label
    legend = _legend_layout([s.name for s in series], ml, width - mr)
    rows = max(1, len({y for _, y, _ in legend}))
    mt = 40 + 16 * rows  # title, then one line per legend row
    height += 16 * (rows - 1)  # the plot area keeps its size however long the legend
    pw, ph = width - ml - mr, height - mt - mb
    inset = 10  # keeps the first and last markers off the axes
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + [v for s in series for _, lo, hi in s.band for v in (lo, hi)]
    ys = [y for y in ys if math.isfinite(y)]
    parts: list[str] = [
        f'<svg class="chart" data-chart="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{ml}" y="18">{escape(title)}</text>',
    ]
    if not xs or not ys:
        parts.append(f'<text class="no-data" x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)

    x_lo, x_hi = min(xs), max(xs)
    if integer_x:
        x_ticks = _int_ticks(x_lo, x_hi)
        x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    else:
        x_ticks = nice_ticks(x_lo, x_hi)
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    if x_hi == x_lo:  # one iteration: centre it
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_range is not None:
        y_ticks = nice_ticks(*y_range, integer=integer_y)
    else:
        lo = min(ys)
        lo = 0.0 if lo >= 0 else lo  # counts and rates read best from zero
        y_ticks = nice_ticks(lo, max(ys), integer=integer_y)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return ml + inset + (x - x_lo) / (x_hi - x_lo) * (pw - 2 * inset)

    def py(y: float) -> float:
        return mt + ph - (y - y_lo) / ((y_hi - y_lo) or 1.0) * ph

    # grid and axes
    parts.append('<g class="grid">')
    for t in y_ticks:
        y = py(t)
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt_num(t))}</text>')
    for t in x_ticks:
        x = px(t)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{escape(fmt_num(t))}</text>')
    parts.append("</g>")
    parts.append(f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}"/>')
    parts.append(f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>')
    parts.append(f'<text class="axis-label" x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(
            f'<text class="axis-label" transform="translate(14 {mt + ph / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
        )

    # bands under lines
    for s in series:
        band = sorted(b for b in s.band if all(math.isfinite(v) for v in b))
        if band:
            upper = " ".join(f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in band)
            lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(band))
            parts.append(f'<polygon class="band" data-series="{escape(s.name)}" points="{upper} {lower}" fill="{s.color}" fill-opacity="0.18"/>')
            if len(band) == 1:  # a single interval: draw it as an error bar
                x, lo, hi = band[0]
                parts.append(
                    f'<line class="errbar" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(lo):.1f}" y2="{py(hi):.1f}" stroke="{s.color}" stroke-opacity="0.5" stroke-width="6"/>'
                )

    # lines and markers, with values in hover titles
    for s in series:
        pts = sorted((x, y) for x, y in s.points if math.isfinite(y))
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = f' stroke-dasharray="{escape(s.dash)}"' if s.dash else ""
        parts.append(
            f'<polyline class="line" data-series="{escape(s.name)}" points="{path}" fill="none" stroke="{s.color}" stroke-width="2.5"{dash}/>'
        )
        if len(pts) <= 60:  # markers only where they stay readable
            for x, y in pts:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{s.color}">'
                    f"<title>{escape(s.name)}: {escape(x_label)} {escape(fmt_num(x))} = {escape(_exact(y))}</title></circle>"
                )

    # legend, above the plot area, wrapped onto as many rows as it needs
    for s, (lx, ly, label) in zip(series, legend):
        dash = f' stroke-dasharray="{escape(s.dash)}"' if s.dash else ""
        parts.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s.color}" stroke-width="3"{dash}/>')
        parts.append(f'<text class="legend" x="{lx + 20}" y="{ly}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend_layout(names: list[str], left: int, right: int) -> list[tuple[int, int, str]]:
    """(x, y, label) per legend entry; text width is estimated (no font metrics in Python)."""
    out, lx, ly = [], left, 38
    for name in names:
        label = name if len(name) <= 48 else name[:47] + "\u2026"
        w = 20 + int(6.5 * len(label)) + 16
        if lx + w > right and lx > left:
            lx, ly = left, ly + 16
        out.append((lx, ly, label))
        lx += w
    return out


def _int_ticks(lo: float, hi: float) -> list[float]:
    lo_i, hi_i = math.floor(lo), math.ceil(hi)
    step = max(1, math.ceil((hi_i - lo_i) / 8))
    return [float(v) for v in range(lo_i, hi_i + 1, step)]


def _exact(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.4g}"
