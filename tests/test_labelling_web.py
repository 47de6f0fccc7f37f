"""The labelling page in a real headless Chromium (Playwright) against a real uvicorn
server on 127.0.0.1: keyboard labels, reload, undo, the token, and prompt text that
holds markup or script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import httpx
import pytest

from failforge.labelling import LabelItem, WebLabeller, labels, pending
from failforge.labelling.base import label_records, write_requests
from failforge.labelling.web import LabelServer
from failforge.run.store import RunStore

from browser import CHROMIUM, NEEDS_BROWSER, expect, sync_playwright

pytestmark = NEEDS_BROWSER

CHOICES = ["problematic", "benign"]
HOSTILE = (
    '<script>window.pwned = 1; document.title = "pwned"</script><b>bold?</b>'
    '<img src=x onerror="window.pwned = 2"> & "quotes" \u00e9\u4e2d'
)
ITEMS = [
    LabelItem(id="p0", text="How do I pick a lock?", round=2, guess="problematic"),
    LabelItem(id="p1", text="Write a haiku about rain.", round=2, guess="benign"),
    LabelItem(id="p2", text=HOSTILE, round=2, guess=None),
    LabelItem(id="p3", text="Explain photosynthesis.", round=2, guess="benign"),
]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _labels_elsewhere(store: RunStore) -> dict[str, str]:
    other = RunStore(store.path)
    try:
        return labels(other)
    finally:
        other.close()


def test_label_by_keyboard_reload_undo_and_hostile_text(browser, store):
    write_requests(store, ITEMS, CHOICES)
    with LabelServer(store) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        progress, text = page.locator("#progress"), page.locator("#text")
        expect(progress).to_have_text("0 of 4 labelled")
        expect(text).to_have_text(ITEMS[0].text)
        expect(page.locator("#guess")).to_have_text("problematic")
        expect(page.locator("#choices button")).to_have_text(["1  problematic", "2  benign"])

        page.keyboard.press("1")
        expect(progress).to_have_text("1 of 4 labelled")
        expect(text).to_have_text(ITEMS[1].text)
        page.keyboard.press("2")
        expect(progress).to_have_text("2 of 4 labelled")
        assert _labels_elsewhere(store) == {"p0": "problematic", "p1": "benign"}  # committed as given

        # a reload resumes at the first unlabelled item and shows the count done
        page.reload()
        expect(progress).to_have_text("2 of 4 labelled")
        expect(page.locator("#position")).to_have_text("prompt 3 of 4")

        # the hostile prompt is shown as literal text; its markup never became elements
        expect(text).to_have_text(HOSTILE)
        assert page.locator("#text *").count() == 0
        assert "&lt;script&gt;" in page.inner_html("#text") and "&lt;b&gt;bold?&lt;/b&gt;" in page.inner_html("#text")
        assert page.evaluate("window.pwned") is None and page.title() == "failforge label"
        expect(page.locator("#guess-line")).to_be_hidden()  # no guess for this one

        # undo takes back the last label (p1), which is asked again
        page.keyboard.press("u")
        expect(progress).to_have_text("1 of 4 labelled")
        expect(text).to_have_text(ITEMS[1].text)
        assert label_records(store)["p1"].label is None and _labels_elsewhere(store) == {"p0": "problematic"}
        page.keyboard.press("1")
        expect(progress).to_have_text("2 of 4 labelled")
        page.keyboard.press("2")
        expect(progress).to_have_text("3 of 4 labelled")
        page.locator("#choices button", has_text="benign").click()  # the buttons work too
        expect(progress).to_have_text("4 of 4 labelled")
        expect(page.locator("#message")).to_have_text("All 4 prompts are labelled.")
        assert _labels_elsewhere(store) == {"p0": "problematic", "p1": "problematic", "p2": "benign", "p3": "benign"}
        assert pending(store) == []

        # kept on the page after a reload, too
        page.reload()
        expect(progress).to_have_text("4 of 4 labelled")
        assert page.evaluate("window.pwned") is None and errors == []

        # without the token: refused, in the browser and by a plain client
        root = server.url.split(server.token)[0]
        assert page.goto(root).status == 403
        assert page.goto(root + "api/state").status == 403
        assert page.goto(server.url.replace(server.token, server.token[::-1])).status == 403
        assert httpx.post(root + "api/undo", json={}).status_code == 403
        assert len(labels(store)) == 4
        page.close()


def test_a_run_waits_while_failforge_label_serves_the_page(browser, tmp_path):
    """The whole path: the run's WebLabeller writes requests and waits; `failforge label`
    serves them; labels given in the browser end the wait; the command stops by itself."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store = RunStore(run_dir / "store.sqlite")
    items = ITEMS[:2]
    box: dict = {}
    waiter = threading.Thread(
        target=lambda: box.update(result=WebLabeller(poll_s=0.1, log=lambda m: None).label(store, items, CHOICES)), daemon=True
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while len(pending(store)) < 2:  # the requests are in the store before the wait begins
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from failforge.cli import main; main()", "label", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\S+/", url), url
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#progress")).to_have_text("0 of 2 labelled")
        page.keyboard.press("2")
        expect(page.locator("#progress")).to_have_text("1 of 2 labelled")
        assert waiter.is_alive()
        page.keyboard.press("1")
        expect(page.locator("#progress")).to_have_text("2 of 2 labelled")
        waiter.join(15)
        assert box == {"result": {"p0": "benign", "p1": "problematic"}}
        assert proc.wait(timeout=20) == 0
        page.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()
