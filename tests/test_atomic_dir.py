"""atomic_dir never deletes the old folder before the new one is in place: a crash at
any step of the swap leaves one complete folder, and recover_dir makes it the final one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from failforge.train import checkpointing
from failforge.train.checkpointing import atomic_dir, recover_dir


class Crash(BaseException):
    """A kill: nothing after it runs (not even ``except Exception`` handlers)."""


def _write(folder: Path, version: str) -> None:
    for i in range(3):
        (folder / f"part{i}").write_text(version)


def _version(folder: Path) -> str | None:
    """The version a folder holds when complete, else None."""
    if not folder.is_dir():
        return None
    parts = {(folder / f"part{i}").read_text() if (folder / f"part{i}").exists() else None for i in range(3)}
    return parts.pop() if len(parts) == 1 else None


def _complete(parent: Path) -> dict[str, str]:
    return {p.name: v for p in parent.iterdir() if (v := _version(p)) is not None}


# every filesystem call of the swap, and a crash before or after each
STEPS = [(op, when, n) for op in ("replace", "rmtree") for when in ("before", "after") for n in (1, 2)]


@pytest.mark.parametrize("op, when, nth", STEPS, ids=[f"{w}-{op}-{n}" for op, w, n in STEPS])
def test_a_crash_at_any_step_leaves_one_complete_folder(tmp_path, monkeypatch, op, when, nth):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        _write(tmp, "old")
    real = {"replace": os.replace, "rmtree": shutil.rmtree}
    calls = {"replace": 0, "rmtree": 0}

    def patched(name):
        def call(*args, **kwargs):
            calls[name] += 1
            if calls[name] == nth and when == "before":
                raise Crash
            out = real[name](*args, **kwargs)
            if calls[name] == nth and when == "after":
                raise Crash
            return out

        return call

    with monkeypatch.context() as m:
        m.setattr(checkpointing.os, "replace", patched("replace"))
        m.setattr(checkpointing.shutil, "rmtree", patched("rmtree"))
        try:
            with atomic_dir(final) as tmp:
                _write(tmp, "new")
        except Crash:
            pass
    complete = _complete(tmp_path)
    assert complete, "no complete folder left"
    assert set(complete.values()) <= {"old", "new"}
    recover_dir(final)
    assert _version(final) in ("old", "new")
    assert not (tmp_path / ".model.old").exists()
    # and the next write goes through
    with atomic_dir(final) as tmp:
        _write(tmp, "next")
    assert _version(final) == "next" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_old_folder_is_kept_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        _write(tmp, "old")
    seen: list[tuple[str, bool]] = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *a, **kw):
        seen.append((Path(path).name, _version(final) == "new"))
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(checkpointing.shutil, "rmtree", rmtree)
    with atomic_dir(final) as tmp:
        _write(tmp, "new")
    removals_of_old = [ok for name, ok in seen if name == ".model.old"]
    assert removals_of_old == [True]  # removed once, and only with the new folder in place
