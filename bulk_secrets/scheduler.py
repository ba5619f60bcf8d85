"""Hands planned steps to the workers so that accounts share the concurrency fairly.

The plan is read ahead by at most ``window`` steps, into one queue per account. A free worker
gets the head of the account that may send soonest (its rate and any Retry-After pause) and,
among those ready, the one with the fewest steps in flight. So an account that is paused or
slow does not hold every worker while others have work. Steps the plan already settled need
no request and go first. Memory stays bounded: the window, never the whole plan.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import anyio

from .models import Step
from .ratelimit import Rates


class Scheduler:
    def __init__(self, steps: Iterable[Step], rates: Rates, *, window: int) -> None:
        self._steps = iter(steps)
        self._rates = rates
        self._window = window
        self._queues: dict[str, deque[Step]] = {}
        self._queued = 0
        self._exhausted = False
        self._in_flight: dict[str, int] = {}
        self._waiting = anyio.Lock()

    async def take(self) -> Step | None:
        """The next step to carry out, or None when there are no more; waits for a turn."""
        chosen = self.take_now()
        if not isinstance(chosen, float):
            return chosen
        async with self._waiting:  # one worker at a time waits for a turn; the rest queue here
            # Waiting for a moment in time (a rate's next slot), not for a flag: sleep is right.
            while isinstance(chosen := self.take_now(), float):
                await self._rates.sleep(chosen)
            return chosen

    def take_now(self) -> Step | float | None:
        """A step that may go now, else the seconds until one may, else None (no more)."""
        self._fill()
        if not self._queued:
            return None
        now = self._rates.now()
        if len(self._queues) == 1:  # one account: no turns to weigh
            account = next(iter(self._queues))
            head = self._queues[account][0]
            ready = now if head.outcome is not None else self._rates.of(account).ready_at()
            if ready > now:
                return ready - now
            if head.outcome is None:
                self._in_flight[account] = self._in_flight.get(account, 0) + 1
            return self._pop(account)
        best: tuple[float, int, str] | None = None
        for account, queue in self._queues.items():
            if queue[0].outcome is not None:  # settled: no request, no turn to wait for
                return self._pop(account)
            ready = max(now, self._rates.of(account).ready_at())
            candidate = (ready, self._in_flight.get(account, 0), account)
            if best is None or candidate < best:
                best = candidate
        assert best is not None
        ready, _, account = best
        if ready > now:
            return ready - now
        self._in_flight[account] = self._in_flight.get(account, 0) + 1
        return self._pop(account)

    def done(self, step: Step) -> None:
        """A step taken with :meth:`take` is finished."""
        if step.outcome is None:
            self._in_flight[step.target.account] -= 1

    def remaining(self) -> Iterator[Step]:
        """Every step not taken yet: the queued ones, then the rest of the plan."""
        for queue in self._queues.values():
            yield from queue
        self._queues.clear()
        self._queued = 0
        yield from self._steps

    def _fill(self) -> None:
        while not self._exhausted and self._queued < self._window:
            step = next(self._steps, None)
            if step is None:
                self._exhausted = True
                return
            account = step.target.account
            queue = self._queues.get(account)
            if queue is None:
                queue = self._queues[account] = deque()
            queue.append(step)
            self._queued += 1

    def _pop(self, account: str) -> Step:
        queue = self._queues[account]
        step = queue.popleft()
        if not queue:
            del self._queues[account]
        self._queued -= 1
        return step
