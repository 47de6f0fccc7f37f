"""The CPU thread count of a run's training steps: chosen once, then kept.

torch splits a CPU matrix product over its intra-op threads, and the split changes
the order of float additions, so two thread counts give slightly different weights
(and, through them, different answers later). A run takes the count from the CPU
affinity of the process that trains first, records it in the store meta
(``train_threads``), and every later step and every resume uses that number, whatever
the affinity of the process that resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from failforge.run.store import RunStore
from failforge.train.device import cpu_count

META_KEY = "train_threads"


def run_threads(store: RunStore | None, count: Callable[[], int] = cpu_count, log: Callable[[str], None] | None = None) -> int:
    """The run's training thread count: the recorded one, else ``count()`` recorded now.

    Without a store (a step trained on its own) it is ``count()`` each time.
    """
    if store is None:
        return count()
    recorded = store.meta().get(META_KEY)
    if isinstance(recorded, int) and recorded >= 1:
        now = count()
        if now != recorded and log is not None:
            log(f"training with {recorded} CPU threads as recorded when the run first trained (this process has {now})")
        return recorded
    n = count()
    store.set_meta(**{META_KEY: n})
    return n
