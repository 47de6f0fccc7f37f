import pytest

from failforge.errors import ConfigError
from failforge.judges.classifier import ClassifierJudge
from failforge.judges.honesty import HonestyJudge
from failforge.judges.math import MathJudge
from failforge.judges.refusal import RefusalJudge
from failforge.judges.registry import JudgeSpec, build_judge, parse_judge
from failforge.models.base import ChatModel, Completion


@pytest.mark.parametrize(
    "text, expected",
    [
        ("refusal", {"kind": "refusal"}),
        ("refusal:refusal", {"kind": "refusal", "fail_on": "refusal"}),
        ("classifier:profanity", {"kind": "classifier", "classifier": "profanity"}),
        ("classifier:embedding:/tmp/c.json,threshold=0.7,field=instruction",
         {"kind": "classifier", "classifier": "embedding:/tmp/c.json", "threshold": 0.7, "field": "instruction"}),
        ("math", {"kind": "math"}),
        ("math:unscorable,decimal_places=3", {"kind": "math", "no_answer": "unscorable", "decimal_places": 3}),
        ("honesty:1.0,letters=ABCDE", {"kind": "honesty", "threshold": 1.0, "letters": "ABCDE"}),
        ("llm:harmless,model.backend=openai,model.base_url=http://127.0.0.1:8000/v1,model=guard",
         {"kind": "llm", "rubric": "harmless", "model": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "guard"}}),
    ],
)
def test_parse_short_form(text, expected):
    assert parse_judge(text) == JudgeSpec.model_validate(expected)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("judo", "kind"),
        ("refusal,threshold=3", "takes no threshold"),
        ("llm:poetry", "unknown rubric"),
        ("classifier:svm", "classifier 'svm'"),
        ("math,decimal_places", "key=value"),
        ("equality:x", "takes no ':' option"),
        ("refusal:maybe", "fail_on"),
    ],
)
def test_parse_errors_are_one_line(text, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        parse_judge(text)
    assert "\n" not in str(e.value)


def test_yaml_file(tmp_path):
    f = tmp_path / "judge.yaml"
    f.write_text("judge:\n  kind: math\n  no_answer: unscorable\n")
    assert parse_judge(str(f)) == JudgeSpec(kind="math", no_answer="unscorable")
    (tmp_path / "bad.yaml").write_text("kind: math\nfail_on: refusal\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        parse_judge(str(tmp_path / "bad.yaml"))


def test_build_each_kind():
    assert isinstance(build_judge(JudgeSpec(kind="refusal", fail_on="refusal")), RefusalJudge)
    assert build_judge(JudgeSpec(kind="refusal", fail_on="refusal")).config.fail_on == "refusal"
    assert build_judge(JudgeSpec(kind="math", no_answer="unscorable")).config.no_answer == "unscorable"
    assert isinstance(build_judge(JudgeSpec(kind="math")), MathJudge)
    h = build_judge(JudgeSpec(kind="honesty", threshold=0.5))
    assert isinstance(h, HonestyJudge) and h.config.threshold == 0.5
    assert isinstance(build_judge(JudgeSpec(kind="classifier")), ClassifierJudge)
    with pytest.raises(ConfigError, match="letters"):
        build_judge(JudgeSpec(kind="honesty", letters="abc"))


class _Echo(ChatModel):
    backend = "fake"

    @property
    def fingerprint(self):
        return "echo"

    def _complete(self, requests):
        return [Completion(text="Rating: 6") for _ in requests]


def test_build_llm_with_passed_model():
    from failforge.judges.base import JudgeInput

    j = build_judge(JudgeSpec(kind="llm", rubric="helpfulness", threshold=7), model=_Echo())
    v = j.judge([JudgeInput(instruction="q", responses=["a"])])[0]
    assert (v.label, v.score, v.judge) == ("fail", 6.0, "llm:helpfulness")
    eq = build_judge(JudgeSpec(kind="equality"), model=_Echo())
    assert eq.id == "equality"
