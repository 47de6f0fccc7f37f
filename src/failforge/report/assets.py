"""The report page's template, styles and script, shipped inside the package and
inlined into every report so it opens with no network."""

from __future__ import annotations

from functools import cache
from importlib import resources


def _read(name: str) -> str:
    return resources.files("failforge.report").joinpath("templates", name).read_text(encoding="utf-8")


@cache
def css() -> str:
    return _read("report.css")


@cache
def js() -> str:
    # The script only reads the page's own DOM; no data is ever spliced into it.
    return _read("report.js")


def environment():
    """A Jinja environment that escapes every value unless it is marked safe (our SVG)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: _read(name)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
