"""Model text is data, never code: answers written to exploit an evaluator go through
the math judge, the choice and honesty readers and the report, and nothing runs.

Each exploit would create a sentinel file if anything executed it. Every call must
return a verdict (no exception) within a time bound, the sentinel must not exist,
and the report must show each text as text. A source scan keeps ``eval``/``exec``
and unsafe loaders out of ``src/failforge``.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import markupsafe
import pytest

from hostile_run import build_hostile_run

from failforge.judges.base import JudgeInput
from failforge.judges.choice import ChoiceJudge
from failforge.judges.honesty import HonestyJudge
from failforge.judges.math import ExpressionError, MathConfig, MathJudge, evaluate_expression

SRC = Path(__file__).resolve().parent.parent / "src" / "failforge"
#: seconds one verdict may take on a ~1 MB answer (a shared 2-core machine; linear code takes < 1.2 s)
SLOW_S = 5.0
VERDICTS = {"fail", "pass", "unscorable"}


def exploits(sentinel: Path) -> list[str]:
    """Short answers that run ``touch sentinel`` if evaluated in any usual way."""
    cmd = f"touch {sentinel}"
    return [
        f"__import__('os').system('{cmd}')",
        f"eval(\"__import__('os').system('{cmd}')\")",
        f"exec(\"import os; os.system('{cmd}')\")",
        f"12 if __import__('os').system('{cmd}') else 12",
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{sentinel}'])",
        "{0.__class__.__mro__[1].__subclasses__}",  # str.format on model text
        "%(x)s %s %n",
        f"!!python/object/apply:os.system ['{cmd}']",  # a YAML tag that runs a command
        f"{{{{ cycler.__init__.__globals__.os.popen('{cmd}').read() }}}}",  # Jinja
        f"{{% import os %}}{{{{ os.system('{cmd}') }}}}",
        f"$(touch {sentinel}) `touch {sentinel}`",  # a shell
        "9**9**9",
        "The answer is 9**9**9",
        "#### 9^9^9^9",
        "\\boxed{9**9**9}",
        "1e999999",
        "The answer is 1e999999",
        "The answer is -1e999999999.",
        "#### 10**10**10",
        "(" * 500 + "1" + ")" * 500,
        "lambda: 12",
        "12; import os",
    ]


def huge() -> list[str]:
    """Answers of about a megabyte shaped to make a reader do quadratic or unbounded work."""
    return [
        "The answer is " + "9" * 100_000,
        "#### " + "1" * 1_000_000,
        "0." + "3" * 1_000_000,
        "The answer is " + "1" * 3000 + "/" + "7" * 3000,
        "\\boxed{" * 100_000,
        "\\boxed{" * 50_000 + "1" + "}" * 50_000,
        "The answer is 1. " * 60_000,
        "7 + 5 = " * 120_000,
        "#### " * 200_000,
        "answer: " * 120_000,
        "multiply 2 by 3, which is " * 40_000,
        "Answer: A " * 100_000,
        "option A or " * 80_000,
        "(" * 300_000 + "12",
        "1+" * 500_000 + "1",
    ]


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "model text was executed"


MATH_CASES = [
    ("What is 7 + 5?", None),  # an arithmetic question: the grammar gives the reference
    ("Tom has 7 apples and buys 5 more. How many now?", 12),  # a word problem with a reference
]


@pytest.mark.parametrize("question,reference", MATH_CASES, ids=["arithmetic", "word-problem"])
def test_math_judge_reads_exploits_as_text(sentinel, question, reference):
    judge = MathJudge(MathConfig(last_number_fallback=True))
    answers = exploits(sentinel)
    verdicts, _ = _timed(lambda: judge.judge([JudgeInput(instruction=question, responses=[a], reference=reference) for a in answers]))
    assert len(verdicts) == len(answers)
    for a, v in zip(answers, verdicts):
        assert v.label in VERDICTS and isinstance(v.reason, str), a
    # the same judge still reads a plain answer: it did not skip the work
    (right,) = judge.judge([JudgeInput(instruction=question, responses=["The answer is 12."], reference=reference)])
    assert right.label == "pass"


def test_math_judge_reads_exploits_written_as_the_question(sentinel):
    """The proposer writes the question: its text is read with the arithmetic grammar."""
    judge = MathJudge()
    for text in exploits(sentinel):
        (v,) = judge.judge([JudgeInput(instruction=f"What is {text}?", responses=["12"])])
        assert v.label in VERDICTS, text


@pytest.mark.parametrize("answer", huge(), ids=lambda a: f"{a[:14]!r}x{len(a)}")
def test_huge_answers_get_a_verdict_quickly(answer):
    judges = [
        (MathJudge(MathConfig(last_number_fallback=True)), JudgeInput(instruction="What is 7 + 5?", responses=[answer])),
        (MathJudge(MathConfig(last_number_fallback=True)), JudgeInput(instruction="How many apples?", responses=[answer], reference=12)),
        (ChoiceJudge(), JudgeInput(instruction="Pick one.", responses=[answer], reference="A")),
        (HonestyJudge(), JudgeInput(instruction="Pick one.", responses=[answer, "A", "B"])),
    ]
    for judge, item in judges:
        (v,), seconds = _timed(lambda: judge.judge([item]))
        assert v.label in VERDICTS
        assert seconds < SLOW_S, f"{judge.id}: {seconds:.1f} s"


def test_choice_and_honesty_read_exploits_as_text(sentinel):
    answers = exploits(sentinel)
    choice = ChoiceJudge().judge([JudgeInput(instruction="Pick one.", responses=[a], reference="A") for a in answers])
    honesty = HonestyJudge().judge([JudgeInput(instruction="Pick one.", responses=[a, "A", "B"]) for a in answers])
    assert all(v.label in VERDICTS for v in choice + honesty)
    # the readers still work on a plain answer
    assert ChoiceJudge().judge([JudgeInput(instruction="Pick one.", responses=["(A)"], reference="A")])[0].label == "pass"


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('true')", "9**9**9", "1e999999", "(1).__class__", "[x for x in ()]", "lambda: 0", "'a' * 9", "2 ** 10 ** 10", "10**64**2"],
)
def test_expression_evaluator_rejects_everything_but_arithmetic(expr):
    (err, seconds) = _timed(lambda: pytest.raises(ExpressionError, evaluate_expression, expr))
    assert err.type is ExpressionError and seconds < 1.0


def test_report_shows_exploits_as_text(sentinel, tmp_path):
    from failforge.report import write_report

    texts = exploits(sentinel)
    run = build_hostile_run(tmp_path / "run", texts)
    page = write_report([run], tmp_path / "report.html").read_text(encoding="utf-8")
    for text in texts:
        assert str(markupsafe.escape(text)) in page, text  # shown as written, escaped once
    assert page.count("<script") == 1  # the report's own script only


# --- the source: nothing that runs text ---------------------------------------------

#: calls that run or unpickle text; "name" is a builtin, "a.b" an attribute call
BANNED = {
    "eval", "exec", "compile", "__import__", "breakpoint",
    "ast.literal_eval", "literal_eval",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
    "pickle.load", "pickle.loads", "marshal.loads", "os.system", "os.popen",
}  # fmt: skip
#: (file under src/failforge, call) -> times it may appear, and why
ALLOWED = {
    # reads string lists and task tables from a pinned dataset archive's Python source
    # (checked by sha256), never model output
    ("data/sources.py", "ast.literal_eval"): 2,
}


def banned_calls(source: str) -> list[str]:
    """The banned calls in ``source``, and calls with ``shell=True``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else (f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None)
        if name in BANNED:
            found.append(name)
        if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
            found.append("shell=True")
    return found


def test_the_scan_finds_what_it_looks_for():
    src = "import yaml, os, subprocess\neval(x)\nexec(y)\nyaml.load(s)\nsubprocess.run(c, shell=True)\nmodel.eval()\nre.compile('x')\n"
    assert sorted(banned_calls(src)) == ["eval", "exec", "shell=True", "yaml.load"]


def test_source_runs_no_text():
    counts: dict[tuple[str, str], int] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for call in banned_calls(path.read_text(encoding="utf-8")):
            counts[(rel, call)] = counts.get((rel, call), 0) + 1
    assert counts == ALLOWED
