import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Torch and llama.cpp share two cores here: keep thread pools from oversubscribing.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path):
    from failforge.run.store import RunStore

    s = RunStore(tmp_path / "store.sqlite")
    yield s
    s.close()


@pytest.fixture
def app():
    """The judge commands (`judge-eval`) on their own Typer app."""
    import typer

    from failforge.cli.judges import register

    a = typer.Typer()
    register(a)

    @a.command("noop")
    def _noop():  # a second command keeps typer in multi-command mode
        pass

    return a
