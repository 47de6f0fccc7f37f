"""Labelling: the store contract (requests, labels, resume), the oracle and terminal
labellers, the web server's token guard and the run-side wait, and `failforge label`.

The judges here are fakes: what is tested is the labelling logic around them."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from rich.console import Console

from failforge.errors import ConfigError, FailforgeError
from failforge.judges.base import Judge, JudgeInput, Verdict
from failforge.labelling import LabelItem, Labeller, OracleLabeller, TerminalLabeller, WebLabeller, labels, pending
from failforge.labelling.base import label_records, requests, write_requests
from failforge.labelling.web import LabelServer
from failforge.run.store import RunStore

CHOICES = ["problematic", "benign"]


def _items(n: int, round: int | None = 1, **meta) -> list[LabelItem]:
    return [LabelItem(id=f"p{i}", text=f"prompt {i}", round=round, guess="benign", meta=dict(meta)) for i in range(n)]


def _other_view(store: RunStore) -> dict[str, str]:
    """Labels as another process sees them: a fresh connection to the same file."""
    other = RunStore(store.path)
    try:
        return labels(other)
    finally:
        other.close()


class Scripted:
    """Answers a TerminalLabeller from a list; checks the store before each answer."""

    def __init__(self, store: RunStore, answers: list[str]):
        self.store, self.answers, self.seen = store, list(answers), []

    def __call__(self, prompt: str) -> str:
        self.seen.append(_other_view(self.store))
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


def _terminal(store, answers):
    out = io.StringIO()
    script = Scripted(store, answers)
    return TerminalLabeller(console=Console(file=out, width=100, color_system=None), input=script), script, out


# --- the store contract -------------------------------------------------------------


def test_pending_and_labels_helpers(store):
    items = _items(3)
    write_requests(store, items, CHOICES)
    assert [i.id for i in pending(store)] == ["p0", "p1", "p2"] and labels(store) == {}
    (req,) = [r for r in requests(store) if r.id == "p1"]
    assert (req.text, req.round, req.guess, req.choices, req.index) == ("prompt 1", 1, "benign", CHOICES, 1)

    from failforge.labelling import give_label

    give_label(store, items[1], "problematic", "someone")
    give_label(store, items[2], "not-a-choice", "someone")  # a label outside the request's choices does not count
    assert labels(store) == {"p1": "problematic", "p2": "not-a-choice"}
    assert [i.id for i in pending(store)] == ["p0", "p2"]
    give_label(store, items[1], None, "someone")  # undo
    assert "p1" not in labels(store) and [i.id for i in pending(store)] == ["p0", "p1", "p2"]
    give_label(store, items[1], "benign", "someone")  # relabel overwrites, one record per item
    assert labels(store)["p1"] == "benign" and store.record_kinds()["label"] == 2
    assert label_records(store)["p1"].labeller == "someone" and store.records("label", iteration=1)


def test_choices_and_ids_are_checked(store):
    oracle = OracleLabeller()
    for bad in (["only"], ["a", "a"], ["a", ""], [str(i) for i in range(10)]):
        with pytest.raises(ConfigError):
            oracle.label(store, _items(1), bad)
    with pytest.raises(ConfigError, match="appears twice"):
        oracle.label(store, _items(1) + _items(1), CHOICES)
    assert store.record_kinds() == {}  # nothing written on bad input


# --- the oracle ---------------------------------------------------------------------


class ByWordJudge(Judge):
    """fail when the instruction says 'attack', unscorable when it says '???', else pass."""

    id = "byword"
    version = "3"

    def __init__(self):
        self.seen: list[JudgeInput] = []

    def _judge(self, items):
        self.seen.extend(items)
        return [
            Verdict(label="unscorable" if "???" in i.instruction else "fail" if "attack" in i.instruction else "pass") for i in items
        ]


def test_oracle_from_pool_labels(store):
    items = [
        LabelItem(id="a", text="x", meta={"label": "problematic"}),
        LabelItem(id="b", text="y", meta={"label": "pass"}),  # a judge word maps onto the choices
        LabelItem(id="c", text="z", meta={"label": "fail"}),
        LabelItem(id="d", text="no label in the pool"),
        LabelItem(id="e", text="a word the choices lack", meta={"label": "maybe"}),
    ]
    logged: list[str] = []
    oracle = OracleLabeller(log=logged.append)
    got = oracle.label(store, items, CHOICES)
    assert got == {"a": "problematic", "b": "benign", "c": "problematic"}
    assert labels(store) == got and {i.id for i in pending(store)} == {"d", "e"}
    assert {r.labeller for r in label_records(store).values()} == {"oracle:pool"}
    assert oracle.counts == {"pool": 3, "judge": 0, "unscorable": 0, "unlabelled": 2}
    assert any("2 of 5" in line and "no judge" in line for line in logged)


def test_oracle_from_a_judge(store):
    judge = ByWordJudge()
    items = [
        LabelItem(id="a", text="attack the server", meta={"responses": ["ok"]}),
        LabelItem(id="b", text="bake a cake"),
        LabelItem(id="c", text="???"),
        LabelItem(id="d", text="from the pool", meta={"label": "fine"}),
    ]
    logged: list[str] = []
    oracle = OracleLabeller(judge=judge, log=logged.append)
    got = oracle.label(store, items, ["bad", "fine", "unsure"])
    assert got == {"a": "bad", "b": "fine", "d": "fine"}  # fail -> choices[0], pass -> choices[1]
    assert [i.instruction for i in judge.seen] == ["attack the server", "bake a cake", "???"]  # the pool item is not judged
    assert judge.seen[0].responses == ["ok"]
    assert oracle.counts["unscorable"] == 1 and "c" not in labels(store)
    assert any("could not score 1 of 3" in line for line in logged)
    assert label_records(store)["a"].labeller == "oracle:judge:byword@3"
    # a second call asks the judge only about what is still unlabelled
    judge.seen.clear()
    assert oracle.label(store, items, ["bad", "fine", "unsure"]) == got
    assert [i.instruction for i in judge.seen] == ["???"]


# --- the terminal labeller ----------------------------------------------------------


def test_terminal_writes_each_label_the_moment_it_is_given(store):
    labeller, script, out = _terminal(store, ["1", "2", "1"])
    got = labeller.label(store, _items(3))
    assert got == {"p0": "problematic", "p1": "benign", "p2": "problematic"}
    # before each answer another connection already saw every earlier label
    assert script.seen == [{}, {"p0": "problematic"}, {"p0": "problematic", "p1": "benign"}]
    text = out.getvalue()
    assert "1 of 3" in text and "3 of 3" in text and "judge's guess: benign" in text and "prompt 2" in text


def test_terminal_undo_invalid_keys_and_quit(store):
    labeller, script, out = _terminal(store, ["1", "u", "x", "2", "1", "u", "u", "1", "q"])
    got = labeller.label(store, _items(4))
    # 1 -> p0 problematic; u -> p0 cleared; x -> hint; 2 -> p0 benign; 1 -> p1 problematic;
    # u -> p1 cleared; u -> p0 cleared; 1 -> p0 problematic; q -> stop (p1..p3 unlabelled)
    assert got == {"p0": "problematic"}
    assert script.seen[2] == {} and script.seen[5] == {"p0": "benign", "p1": "problematic"} and script.seen[7] == {}
    assert label_records(store)["p1"].label is None  # the undo was stored, not only forgotten
    assert [i.id for i in pending(store)] == ["p1", "p2", "p3"]
    assert "press 1-2" in out.getvalue() and "stopped: 1 of 4 labelled" in out.getvalue()


def test_terminal_resume_asks_only_for_the_rest(store):
    first, _, _ = _terminal(store, ["2", "1"])  # then end of input: counts as quit
    assert first.label(store, _items(4)) == {"p0": "benign", "p1": "problematic"}
    second, script, out = _terminal(store, ["1", "2"])
    got = second.label(store, _items(4))
    assert got == {"p0": "benign", "p1": "problematic", "p2": "problematic", "p3": "benign"}
    assert len(script.seen) == 2 and "3 of 4  (2 labelled)" in out.getvalue() and "prompt 0" not in out.getvalue()
    # everything labelled: nothing is asked at all
    third, script, _ = _terminal(store, [])
    assert third.label(store, _items(4)) == got and script.seen == []


def test_terminal_reads_a_stream(store):
    out = io.StringIO()
    labeller = TerminalLabeller(console=Console(file=out, width=100, color_system=None), input=io.StringIO("2\n1\n"))
    assert labeller.label(store, _items(3)) == {"p0": "benign", "p1": "problematic"}


def test_a_labelled_item_is_never_asked_again(store):
    class Refuses(Labeller):
        def _label(self, store, items, choices, already):
            raise AssertionError(f"asked for {[i.id for i in items]}")

    OracleLabeller().label(store, _items(2, label="benign"), CHOICES)
    assert Refuses().label(store, _items(2), CHOICES) == {"p0": "benign", "p1": "benign"}


# --- the web server: token, headers, API --------------------------------------------------


def test_server_refuses_requests_without_the_token(store):
    write_requests(store, _items(2), CHOICES)
    with LabelServer(store) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.token in server.url
        root = server.url.split(server.token)[0]
        wrong = server.url.replace(server.token, "x" * len(server.token))
        for url in (root, root + "api/state", wrong, wrong + "api/state", wrong + "page.js", root + "page.js"):
            r = httpx.get(url)
            assert r.status_code == 403, url
            assert "default-src 'none'" in r.headers["content-security-policy"]
        assert httpx.post(wrong + "api/label", json={"id": "p0", "label": "benign"}).status_code == 403
        assert httpx.get(server.url, headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding
        assert labels(store) == {}

        page = httpx.get(server.url)
        assert page.status_code == 200 and "<script src=\"page.js\">" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and page.headers["x-content-type-options"] == "nosniff"
        state = httpx.get(server.url + "api/state").json()
        assert (state["done"], state["total"], state["items"][0]["label"]) == (0, 2, None)

        r = httpx.post(server.url + "api/label", json={"id": "p0", "label": "problematic"})
        assert r.status_code == 200 and r.json()["done"] == 1 and _other_view(store) == {"p0": "problematic"}
        assert httpx.post(server.url + "api/label", json={"id": "p0", "label": "nope"}).status_code == 400
        assert httpx.post(server.url + "api/label", json={"id": "zz", "label": "benign"}).status_code == 404
        assert httpx.post(server.url + "api/label", data={"id": "p1", "label": "benign"}).status_code == 400  # form posts
        r = httpx.post(server.url + "api/undo", json={})
        assert r.json()["undone"] == "p0" and r.json()["done"] == 0 and labels(store) == {}
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_a_finished_call_stays_on_the_page_and_can_be_undone(store):
    write_requests(store, _items(2), CHOICES)
    with LabelServer(store) as server:
        for i in range(2):
            state = httpx.post(server.url + "api/label", json={"id": f"p{i}", "label": "benign"}).json()
        assert (state["done"], state["total"]) == (2, 2) and pending(store) == []
        assert httpx.get(server.url + "api/state").json()["done"] == 2  # a reload still shows "2 of 2"
        r = httpx.post(server.url + "api/undo", json={}).json()
        assert r["undone"] == "p1" and (r["done"], r["total"]) == (1, 2) and [i.id for i in pending(store)] == ["p1"]
    with LabelServer(store) as fresh:  # a new server shows only calls still waiting, from where they stopped
        state = httpx.get(fresh.url + "api/state").json()
        assert (state["done"], state["total"]) == (1, 2)


def test_server_listens_on_loopback_only(store):
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        with pytest.raises(FailforgeError, match="loopback"):
            LabelServer(store, host=host)
    with pytest.raises(FailforgeError, match="loopback"):
        WebLabeller(host="0.0.0.0")


# --- the run side: waiting for labels -------------------------------------------------------


def _label_in_background(label_fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["result"] = label_fn()
        except BaseException as e:  # pragma: no cover - reported by the assertion below
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_web_labeller_waits_for_labels_given_elsewhere(store):
    logged: list[str] = []
    labeller = WebLabeller(poll_s=0.05, log=logged.append)
    t, box = _label_in_background(lambda: labeller.label(store, _items(2), CHOICES))
    _wait_for(lambda: len(pending(store)) == 2)  # the requests are visible to another process
    assert "failforge label" in logged[0] and str(store.path.parent) in logged[0]
    other = RunStore(store.path)  # the `failforge label` process
    with LabelServer(other) as server:
        httpx.post(server.url + "api/label", json={"id": "p1", "label": "benign"})
        time.sleep(0.2)
        assert t.is_alive()  # one of two: still waiting
        httpx.post(server.url + "api/label", json={"id": "p0", "label": "problematic"})
        t.join(10)
    other.close()
    assert not t.is_alive() and box == {"result": {"p0": "problematic", "p1": "benign"}}
    assert any("1 of 2 labelled" in line for line in logged) and pending(store) == []


def test_web_labeller_serving_itself(store):
    logged: list[str] = []
    labeller = WebLabeller(serve=True, poll_s=0.05, log=logged.append)
    t, box = _label_in_background(lambda: labeller.label(store, _items(2), CHOICES))
    _wait_for(lambda: logged)
    url = re.search(r"http://127\.0\.0\.1:\d+/\S+/", logged[0]).group(0)
    for i, lab in ((0, "benign"), (1, "benign")):
        assert httpx.post(url + "api/label", json={"id": f"p{i}", "label": lab}).status_code == 200
    t.join(10)
    assert box == {"result": {"p0": "benign", "p1": "benign"}}
    with pytest.raises(httpx.ConnectError):  # the server went with the wait
        httpx.get(url, timeout=2)


def test_web_labeller_timeout_keeps_what_was_given(store):
    labeller = WebLabeller(poll_s=0.02, timeout_s=0.2, log=lambda m: None)
    write_requests(store, _items(2), CHOICES)
    from failforge.labelling import give_label

    give_label(store, _items(2)[0], "benign", "web")
    assert labeller.label(store, _items(2), CHOICES) == {"p0": "benign"}


# --- `failforge label` ---------------------------------------------------------------


CLI = [sys.executable, "-c", "from failforge.cli import main; main()"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_label_command_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _cli("label", str(tmp_path / "empty"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not a run directory" in r.stderr
    assert not (tmp_path / "empty" / "store.sqlite").exists()
    (tmp_path / "run").mkdir()
    RunStore(tmp_path / "run" / "store.sqlite").close()
    r = _cli("label", str(tmp_path / "run"))
    assert r.returncode == 2 and "nothing waiting for labels" in r.stderr and r.stderr.strip().count("\n") == 0
    r = _cli("label", str(tmp_path / "run"), "--host", "0.0.0.0")
    assert r.returncode == 2 and "loopback" in r.stderr


def test_label_command_serves_until_nothing_is_pending(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store = RunStore(run_dir / "store.sqlite")
    write_requests(store, _items(2), CHOICES)
    proc = subprocess.Popen(
        [*CLI, "label", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]{20,}/", url), url
        assert httpx.get(url.rsplit("/", 2)[0] + "/api/state").status_code == 403
        assert httpx.get(url + "api/state").json()["total"] == 2
        for i in range(2):
            assert httpx.post(url + "api/label", json={"id": f"p{i}", "label": "problematic"}).status_code == 200
        assert proc.wait(timeout=20) == 0  # stops by itself once nothing is pending
        assert "nothing left to label: labels given 2" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert labels(store) == {"p0": "problematic", "p1": "problematic"}
    store.close()


def test_label_command_ctrl_c_keeps_the_labels(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store = RunStore(run_dir / "store.sqlite")
    write_requests(store, _items(2), CHOICES)
    proc = subprocess.Popen([*CLI, "label", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert httpx.post(url + "api/label", json={"id": "p1", "label": "benign"}).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        assert "stopped: labels given 1, still waiting 1" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert labels(store) == {"p1": "benign"} and [i.id for i in pending(store)] == ["p0"]
    store.close()


def test_label_command_is_registered():
    from typer.main import get_command

    from failforge.cli import app

    assert "label" in get_command(app).commands


def test_inherited_labels_measured_against_a_persons_reading():
    """50 rewrites of the embedded adversary: the label each inherited from the prompt
    it rewrote, against a person's reading of the rewrite itself."""
    from failforge.judges.measured import measure, packaged_labels
    from failforge.labelling.oracle import INHERITED_COLUMNS, INHERITED_LABELS, InheritedLabels

    result = measure(InheritedLabels(), packaged_labels(INHERITED_LABELS), **INHERITED_COLUMNS)
    assert result.rows == 50 and result.unscorable == 0
    # most rewrites of harmful prompts no longer ask for anything harmful
    assert result.confusion == {"fail": {"fail": 4, "pass": 1, "unscorable": 0}, "pass": {"fail": 30, "pass": 15, "unscorable": 0}}
    assert result.accuracy == 0.38
