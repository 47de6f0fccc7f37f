"""The in-memory index of stored calls (run/call_index.py): exact, across merges."""

import os
import random

import numpy as np
import pytest

from failforge.run import call_index
from failforge.run.call_index import CallIndex


def test_finds_every_key_it_was_given_and_no_other_across_merges(monkeypatch):
    monkeypatch.setattr(call_index, "MERGE_AFTER", 50)
    rng = random.Random(7)
    truth: dict[bytes, int] = {}
    index = CallIndex()
    row = 0
    for _ in range(40):  # batches of appends, as commits bring them; several merges happen
        batch = []
        for _ in range(rng.randint(1, 30)):
            row += 1
            key = rng.randbytes(32)
            batch.append((row, key))
            truth.setdefault(key, row)
        # a key given again (a second writer's row for it) keeps its first row
        old_key = rng.choice(list(truth))
        batch.append((row + 1000, old_key))
        index.add(batch)
    assert len(index._keys) > 0, "the test must cross a merge"
    keys = list(truth)
    strangers = [rng.randbytes(32) for _ in range(200)]
    # keys ending in zero bytes and sitting before / after every stored key
    strangers += [b"\x00" * 32, b"\xff" * 32, keys[0][:31] + b"\x00"]
    assert index.find(keys) == [truth[k] for k in keys]
    assert index.find([k for k in strangers if k not in truth]) == [None] * len([k for k in strangers if k not in truth])
    assert len(index) == len(truth)
    assert index.last_row == row + 1000


def test_built_from_the_table_equals_built_by_appends():
    pairs = [(i + 1, os.urandom(32)) for i in range(500)]
    pairs.append((501, pairs[3][1]))  # stored twice: the first row wins
    built = CallIndex.from_table(np.array([r for r, _ in pairs], dtype=np.int64), b"".join(k for _, k in pairs))
    keys = [k for _, k in pairs]
    assert built.find(keys) == [r if r != 501 else 4 for r, _ in pairs]
    assert built.last_row == 501 and len(built) == 500
    assert CallIndex.from_table(np.empty(0, dtype=np.int64), b"").find(keys[:2]) == [None, None]


def test_a_key_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        CallIndex().add([(1, b"short")])
