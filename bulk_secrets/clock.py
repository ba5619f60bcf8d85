"""Time, as the run sees it: when is now, and how to wait.

Everything that paces or waits (the rate limiter, the retry policy, the emulator's latency and
rate limit) takes a :class:`Clock`, so that a test can hand one clock to the client and the
emulator alike and run minutes of Retry-After and backoff without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``anyio.sleep``."""

    now = staticmethod(time.monotonic)  # no frame of its own: it is read for every request

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
