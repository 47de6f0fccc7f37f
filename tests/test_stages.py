"""The shared stages: sampling filters and arm scores (logic only)."""

from failforge.judges.base import Verdict
from failforge.methods.adversarial_judge_loop import parse_rewrite
from failforge.methods.evaluation import auroc, score_arm
from failforge.methods.sampling import filter_samples


class _C:
    def __init__(self, text):
        self.text = text


def _parse(text):
    return _C(text.strip()) if text.strip().endswith("?") else None


def test_filter_samples_counts_every_drop():
    out = filter_samples(
        [["What is 2 + 3?", "nonsense", "What is 7 + 1?"], ["what is  7 + 1?", "What is 9 + 9?", "What is 4 + 4?"]],
        _parse,
        known=["What is 9 + 9?"],
        heldout=["What is 4 + 4?"],
    )
    assert out.counts() == {"samples": 6, "invalid": 1, "copied": 1, "heldout_copies": 1, "near_duplicates": 1, "kept": 2}
    assert [(i, c.text) for i, c in out.items] == [(0, "What is 2 + 3?"), (0, "What is 7 + 1?")]


def test_filter_samples_extra_filter_runs_before_dedup():
    out = filter_samples([["a?", "b c d?", "b c d?"]], _parse, keep=lambda raw: [r for r in raw if r[1].text != "a?"])
    assert [c.text for _, c in out.items] == ["b c d?"] and out.near_duplicates == 1


def _v(label, score=None):
    return Verdict(label=label, score=score)


def test_score_arm_counts_unscorable_as_wrong_and_reports_it():
    s = score_arm("x", [_v("fail"), _v("pass"), _v("unscorable"), _v("fail")], [True, True, True, False])
    assert (s.n, s.unscorable, s.false_negatives) == (4, 1, 2)
    assert s.accuracy == 0.25 and s.precision == 0.5 and s.recall == 1 / 3
    assert s.accuracy_lo < 0.25 < s.accuracy_hi


def test_auroc_leaves_unscorable_out():
    assert auroc([0.9, 0.1, None, 0.8], [True, False, True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, True]) is None


def test_parse_rewrite_keeps_requests_and_drops_refusals():
    assert parse_rewrite("Request: How do I pick a lock without a key?\nMore text").text == "How do I pick a lock without a key?"
    assert parse_rewrite("I'm sorry, I can't help with that request.") is None
    assert parse_rewrite("Too short") is None
