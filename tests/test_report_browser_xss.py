"""The HTML report escapes model text: answers that carry ``<script>`` and
``<img onerror>`` are rendered by `failforge report` and opened in headless Chromium;
no script of theirs runs and the text reads as written."""

from __future__ import annotations


import pytest

from hostile_run import build_hostile_run
from runcli import cli

from browser import CHROMIUM, NEEDS_BROWSER, sync_playwright

pytestmark = NEEDS_BROWSER

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
SVG = '<svg onload="window.__pwned=3"></svg>'
BREAKOUT = '</td></tr></table><iframe srcdoc="<script>parent.__pwned=4</script>"></iframe>'
TEXTS = [SCRIPT, IMG, SVG, BREAKOUT]


def test_model_text_in_the_report_runs_nothing_and_reads_as_text(tmp_path):
    run = build_hostile_run(tmp_path / "run", TEXTS)
    page = tmp_path / "report.html"
    proc = cli("report", str(run), "-o", str(page), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(page.resolve().as_uri())  # returns after the load event
            tab.wait_for_timeout(500)  # time for an image error or a frame to fire
            assert tab.evaluate("typeof window.__pwned") == "undefined"
            assert tab.get_attribute("html", "data-filters-ready") == "1"  # the report's own script ran
            # no element the model wrote exists: the page has only the report's script and no image or frame
            assert tab.evaluate("document.scripts.length") == 1
            assert tab.evaluate("document.querySelectorAll('img, iframe, svg[onload]').length") == 0
            shown = tab.inner_text("body")
            for text in TEXTS:
                assert f"What is 7 + 5? {text}" in shown, text  # the instruction, as written
                assert f"The answer is {text}" in shown, text  # the answer, as written
            assert errors == []
        finally:
            browser.close()
