"""Per-account request rates: a cap, lowered on 429 and raised again slowly, and Retry-After.

Every request to an account (list, create, update, delete, and each retry) takes a slot from
that account's :class:`AccountRate`. Slots are paced ``1 / rate`` apart.

- A 429 lowers the rate (multiplicative decrease) to ``DECREASE`` times the lesser of the rate
  and the successes of about the last second: what the server really let through. Only a request
  sent after the last cut can cut again, so a burst of 429s is answered once.
- Each second of successes raises the rate by ``INCREASE`` of itself, at least ``MIN_STEP``
  (additive increase), up to the cap.
- A Retry-After holds every request to that account until then, not only the one told.
- An account with no cap (``--max-rps 0``) runs unpaced until its first 429.
- A Retry-After longer than ``max_wait`` is not waited: the request fails at once
  (:class:`~bulk_secrets.errors.WaitTooLong`), and the account does not pause for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio

from .errors import RateLimited, WaitTooLong

DECREASE = 0.95  # of what got through, on a 429
INCREASE = 0.01  # of the rate, added per second of successes
MIN_STEP = 0.5  # requests per second, added per second of successes at the least
MIN_RATE = 0.1  # requests per second: never stop altogether
WINDOW = 1.0  # seconds of successes that a cut looks at
MIN_EVIDENCE = 5  # successes in the window before they are trusted as a measure

P = ParamSpec("P")
T = TypeVar("T")
Clock = Callable[[], float]


class AccountRate:
    """The pace of one account's requests."""

    def __init__(self, ceiling: float | None) -> None:
        self.rate = ceiling  # requests per second; None: no pacing (yet)
        self.paused_until = 0.0
        self._ceiling = ceiling
        self._next = 0.0  # the earliest time of the next slot
        self._lowered_at = float("-inf")
        self._window_start = float("-inf")  # successes in this window and the one before
        self._current = 0
        self._previous = 0
        self._first_success = 0.0

    def ready_at(self) -> float:
        """When the next request may go."""
        return max(self._next, self.paused_until)

    def reserve(self, now: float) -> float:
        """Take the next slot and return its time (``now`` or later)."""
        start = max(now, self._next, self.paused_until)
        if self.rate is not None:
            self._next = start + 1.0 / self.rate
        return start

    def succeeded(self, now: float) -> None:
        self._count(now)
        rate = self.rate
        if rate is not None and (self._ceiling is None or rate < self._ceiling):
            raised = rate + max(INCREASE * rate, MIN_STEP) / rate  # per second: rate successes
            self.rate = raised if self._ceiling is None else min(self._ceiling, raised)

    def rate_limited(self, sent_at: float, now: float, retry_after: float | None) -> None:
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        if sent_at <= self._lowered_at:
            return  # sent before the last cut, which already answered this burst
        through = self._recent_rate(now)
        if through is None:
            if self.rate is None:
                return  # nothing measured yet: stay unpaced, and let the backoff wait
            through = self.rate
        elif self.rate is not None:
            through = min(through, self.rate)
        self.rate = max(MIN_RATE, DECREASE * through)
        self._lowered_at = now

    def _count(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed >= WINDOW:
            self._previous = self._current if elapsed < 2 * WINDOW else 0
            self._current = 0
            self._window_start = now
            self._first_success = self._first_success or now
        self._current += 1

    def _recent_rate(self, now: float) -> float | None:
        """Successes per second over about the last second, or None on too little evidence."""
        share_of_previous = max(0.0, 1.0 - (now - self._window_start) / WINDOW)
        count = self._current + self._previous * share_of_previous
        if count < MIN_EVIDENCE:
            return None
        # Younger than a window: the rate over the time there has been.
        span = min(WINDOW, max(now - self._first_success, 0.01))
        return count / span


class Rates:
    """The rates of every account, each made on first use with the same cap."""

    def __init__(
        self,
        max_rps: float,
        *,
        max_wait: float = math.inf,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._ceiling = max_rps or None
        self._max_wait = max_wait
        self._accounts: dict[str, AccountRate] = {}
        self._clock = clock
        self._sleep = sleep

    def of(self, account: str) -> AccountRate:
        rate = self._accounts.get(account)
        if rate is None:
            rate = self._accounts[account] = AccountRate(self._ceiling)
        return rate

    def now(self) -> float:
        return self._clock()

    async def sleep(self, seconds: float) -> None:
        """Wait on the clock the rates are paced by."""
        await self._sleep(seconds)

    async def call(
        self, account: str, request: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Send one request to ``account`` in its turn, and learn from the answer."""
        rate = self.of(account)
        now = self._clock()
        sent_at = rate.reserve(now)
        if sent_at > now:
            sent_at = await self._wait_turn(rate, sent_at)
        try:
            answer = await request(*args, **kwargs)
        except RateLimited as exc:
            if exc.retry_after is not None and exc.retry_after > self._max_wait:
                raise WaitTooLong(
                    f"the server asked to wait {exc.retry_after:.0f}s (Retry-After), more than "
                    f"the {self._max_wait:g}s the run may wait",
                    status=exc.status,
                ) from exc
            rate.rate_limited(sent_at, self._clock(), exc.retry_after)
            raise
        rate.succeeded(self._clock())
        return answer

    async def _wait_turn(self, rate: AccountRate, start: float) -> float:
        """Sleep until the slot taken at ``start``; take another if a pause came meanwhile."""
        while True:
            await self._sleep(max(0.0, start - self._clock()))  # time may have passed it
            now = self._clock()
            if now >= rate.paused_until:
                return start
            start = rate.reserve(now)
