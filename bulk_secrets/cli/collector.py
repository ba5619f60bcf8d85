"""Python's cyclic garbage collector, set for a command's run, and given back as it was.

Two things make the collector costly in a run, and only the command changes them, in a process
of its own (a library caller's collector is left as it is):

- **What the manifests hold.** The first pass makes objects by the hundred thousand and keeps
  up to 50,000 entries, which hold no cycle and live until the process ends: the collector
  would traverse them over and over, in that pass and again through the run (8k instructions
  per secret, of about 450k). So it is paused while they load, and everything the process
  holds by then is frozen out of its sight (``gc.freeze``).
- **Requests that live for a latency.** At 50 ms and concurrency 256, every request's objects
  outlive a collection of the youngest objects at Python's default threshold (700), and those
  that die old let the youngest generation grow past it (the threshold counts objects made
  less objects freed, of any age): a slow collection traversed some 13,000 objects, and the
  collector took 170 to 270 ms of a run of 20,000 secrets, 5% of its CPU (bare aiohttp: 30 to
  65 ms). At ``RUN_THRESHOLD`` it took 21 to 26 ms. What it holds back is only garbage in cycles,
  which reference counting cannot free: at most one threshold's worth of objects at a time.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

RUN_THRESHOLD = 10_000  # objects made (less those freed) between two youngest collections


@contextlib.contextmanager
def paused_then_frozen() -> Iterator[None]:
    """The collector paused for the block (the manifests loading); then what the process
    holds frozen, and the collector back on at ``RUN_THRESHOLD`` for the run."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(RUN_THRESHOLD, *gc.get_threshold()[1:])
        gc.enable()


def give_back(threshold: tuple[int, int, int]) -> None:
    """Nothing frozen, and the ``threshold`` the process had (``gc.get_threshold()``): for a
    caller that goes on in this process (the tests)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)
