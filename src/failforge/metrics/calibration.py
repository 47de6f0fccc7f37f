"""Calibration: does a confidence score rank right answers above wrong ones?"""

from __future__ import annotations

from collections.abc import Sequence


def average_precision(correct: Sequence[bool], confidence: Sequence[float]) -> float | None:
    """Average precision of ``confidence`` as a ranking of ``correct`` answers.

    R-Tuning reports this for "I am sure" confidences. None when there are no
    correct answers (AP is undefined then).
    """
    if len(correct) != len(confidence):
        raise ValueError(f"{len(correct)} labels for {len(confidence)} scores")
    if not any(correct):
        return None
    from sklearn.metrics import average_precision_score

    return float(average_precision_score([int(bool(c)) for c in correct], list(confidence)))
