"""Request deadlines kept by one sweep a tick, not by a timer per request.

A timer per request (aiohttp's ``ClientTimeout(total=...)``, or ``asyncio.timeout``) arms and
disarms an event-loop timer and a context for every request: about 20,000 instructions each,
a twentieth of a whole request's cost. :class:`Watchdog` instead notes when each request
started (a dict entry) and, every ``tick``, cancels the tasks whose request has run past
``limit``. It is the same mechanism as ``asyncio.timeout`` (the task is cancelled, and the
``CancelledError`` it raises is told from an outside cancellation by the task's own count of
cancel requests), only coarser: a request is cancelled between ``limit`` and ``limit + tick``
seconds after it started.

Use::

    task = watchdog.begin()
    try:
        ... await the request ...
    except asyncio.CancelledError:
        if watchdog.expired(task):
            raise TimeoutError from None   # the deadline's own cancellation
        raise                              # someone else's: passed on
    finally:
        watchdog.end(task)

A task is cancelled only while it is between ``begin`` and ``end``, and it is then suspended at
an ``await`` inside that block, so the cancellation arrives there.
"""

from __future__ import annotations

import asyncio
import time

MAX_TICK = 1.0  # seconds between sweeps, at most
MIN_TICK = 0.01


class Watchdog:
    """Cancels a task whose request has run for more than ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.tick = min(MAX_TICK, max(MIN_TICK, limit / 8))
        self._started: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._handle: asyncio.TimerHandle | None = None
        # The loop it runs on, known from ``start``: ``current_task()`` without it asks for the
        # running loop, which costs a getpid system call on every request.
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Sweep a tick from now, on the running loop, and every tick after."""
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self.tick, self._every_tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def begin(self) -> asyncio.Task[object]:
        """The current task starts a request: its deadline runs from now."""
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("a request must be sent from a task")
        self._started[task] = time.monotonic()
        return task

    def end(self, task: asyncio.Task[object]) -> None:
        """The task's request is over, however it ended."""
        del self._started[task]
        if task in self._expired:  # cancelled, but the request ended some other way first
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether the ``CancelledError`` the task caught is the deadline's alone; if so, the
        task is no longer cancelled, and the request is to fail as timed out."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def sweep(self) -> None:
        """Cancel every task whose request is past its deadline."""
        late = time.monotonic() - self.limit
        for task, started in self._started.items():  # task.cancel() only schedules: no change
            if started <= late and task not in self._expired:
                self._expired.add(task)
                task.cancel()

    def _every_tick(self) -> None:
        self.sweep()
        self.start()  # the next tick, on the loop that runs this one
