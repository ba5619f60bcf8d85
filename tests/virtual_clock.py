"""A :class:`~bulk_secrets.clock.Clock` for tests: virtual seconds that never wait for real."""

from __future__ import annotations

import math

from anyio.lowlevel import checkpoint


class VirtualClock:
    """Virtual time, moved on by sleepers and by :meth:`advance`; nothing sleeps for real.

    ``sleep(d)`` notes its deadline (now + d), yields once to the event loop, then moves the
    time to that deadline unless it is already past it. Parallel sleepers do not add up: the
    tasks that ask to sleep in the same turn of the loop all wake in the next, and time jumps
    to the furthest deadline asked, as on a wall clock. Sleeps one after another do add up.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0.0, seconds)
        await checkpoint()  # as anyio.sleep(0): other tasks run, and ask, before time moves
        self._now = max(self._now, deadline)

    def advance(self, seconds: float) -> None:
        """Move time forward, as if ``seconds`` had passed with nobody asking."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._now += seconds
