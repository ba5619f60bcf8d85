"""Per-account request rates: a cap, Retry-After pauses, and a cut on 429 that is soon won back.

Every request to an account (list, create, update, delete, and each retry) takes a slot from
that account's :class:`AccountRate`. Slots are paced ``1 / rate`` apart.

- A Retry-After holds every request to that account until then, not only the one told.
- A 429 also cuts the rate to ``DECREASE`` of the rate in force (multiplicative decrease). Only
  a request sent after the last cut can cut again, so a burst of 429s is answered once.
- After a cut that came with a pause, each success adds ``RECOVER`` of the rate (at least
  ``MIN_STEP`` a second) until the rate is back where the cut found it, or where the first cut
  found it when more came before it was back (for a capped account: the cap). Eleven successes
  win one cut back, 32 three.
- Past that, each second of successes adds ``INCREASE`` of the rate, at least ``MIN_STEP``
  (additive increase). The cap (``--max-rps``) is never passed.
- A 429 without Retry-After (or with ``Retry-After: 0``) paused nothing: the backoff of the
  refused request is the only wait, so its cut is won back at half the pace,
  ``RECOVER_UNPAUSED`` a success (21 successes a cut).
- An account with no cap (``--max-rps 0``) runs unpaced until its first 429, which sets its
  rate to ``DECREASE`` of what got through in the last second (no cut on less than
  ``MIN_EVIDENCE`` successes).
- A Retry-After longer than ``max_wait`` is not waited: the request fails at once
  (:class:`~bulk_secrets.errors.WaitTooLong`), and the account does not pause for it.

Why this shape. One 429 does not tell an account over its limit from an unlucky one: a server
whose limit others share (Fireworks counts the account's own inference traffic) refuses a
request now and then whatever the client does. What matters is what each 429 costs.

- The pause is the server's own brake, and the dearest part: a second of nothing per 429.
  Against a token bucket it is also enough, since the bucket refills while the account waits.
- So the cut is a precaution that must cost little more. It is taken from the rate in force:
  measured over the last second, the pause in it, the rate would be near nothing, and every
  sporadic 429 would ratchet the account toward a stop. (That was the rule before: with 1% and
  3% of requests refused at random, a run at the default cap kept 0.33x and 0.18x of its
  goodput; now 0.61x and 0.37x, about what the pauses alone leave.)
- It is won back by successes, not by time: a pause passes whether or not the server takes
  requests again, a success shows that it does, and a success is the one event cheap enough to
  act on at every request. The way back must outrun the cuts: with one request in ``n``
  refused it does while ``(1 + RECOVER) ** n > 1 / DECREASE``, up to about one in ten.
- A limit the rate really passes answers with 429 again, each with its pause; past the rate
  that met the last cut only the slow additive increase probes, so a token bucket is used to
  the full with few 429s. What this gives up: against a limit with next to no burst and whole
  seconds of Retry-After, every climb back above the limit costs another pause.
- Without Retry-After (Fireworks does not document whether its 429s carry one) nothing pauses
  the account, so the cut is the only brake, and winning it back is what puts the rate over a
  real limit again. It is won back all the same, for a cut that stayed would let sporadic 429s
  ratchet the rate down (before: 5% of requests refused took 300 secrets 31 s), but at half the
  pace: ``(1 + RECOVER_UNPAUSED) ** n > 1 / DECREASE`` holds up to about one request in 20
  refused at random, and against a limit that says nothing the rate settles where one request
  in 20 to 30 is refused, each retried after its backoff.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

from .errors import RateLimited, WaitTooLong

DECREASE = 0.9  # of the current rate, on a 429
RECOVER = 0.01  # of the rate, added per success while below the rate before a paused cut
RECOVER_UNPAUSED = 0.005  # the same after a cut that no Retry-After paused
INCREASE = 0.01  # of the rate, added per second of successes beyond that
MIN_STEP = 0.5  # requests per second, added per second of successes at the least
MIN_RATE = 0.1  # requests per second: never stop altogether
WINDOW = 1.0  # seconds of successes an unpaced account's first cut looks at
MIN_EVIDENCE = 5  # successes in the window before they are trusted as a measure

Clock = Callable[[], float]


class AccountRate:
    """The pace of one account's requests."""

    def __init__(self, ceiling: float | None) -> None:
        self.rate = ceiling  # requests per second; None: no pacing (yet)
        self.paused_until = 0.0
        self._ceiling = math.inf if ceiling is None else ceiling
        self._recover_to = 0.0 if ceiling is None else ceiling  # where successes win a cut back to
        self._recover = RECOVER  # of the rate, won back per success: by the last cut's kind
        self._next = 0.0  # the earliest time of the next slot
        self._lowered_at = -math.inf
        self._window_start = -math.inf  # successes in this window and the one before (unpaced)
        self._current = 0
        self._previous = 0

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
        # Once per request: a few comparisons and float operations, and no call.
        rate = self.rate
        if rate is None:  # unpaced: count the successes of this window (see _recent_rate)
            elapsed = now - self._window_start
            if elapsed >= WINDOW:
                self._previous = self._current if elapsed < 2 * WINDOW else 0
                self._current = 0
                self._window_start = now
            self._current += 1
        elif rate < self._recover_to:  # winning a cut back
            step = self._recover * rate
            if step * rate < MIN_STEP:  # below MIN_STEP a second (rate successes a second)
                step = MIN_STEP / rate
            rate += step
            self.rate = rate if rate < self._recover_to else self._recover_to
        elif rate < self._ceiling:  # probing past it
            step = INCREASE * rate
            rate += (step if step > MIN_STEP else MIN_STEP) / rate
            self.rate = rate if rate < self._ceiling else self._ceiling

    def rate_limited(self, sent_at: float, now: float, retry_after: float | None) -> None:
        paused = retry_after is not None and retry_after > 0
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        if sent_at <= self._lowered_at:
            return  # sent before the last cut, which already answered this burst
        rate = self.rate
        if rate is None:
            rate = self._recent_rate(now)
            if rate is None:
                return  # nothing measured yet: stay unpaced, and let the backoff wait
        self.rate = max(MIN_RATE, DECREASE * rate)
        self._recover_to = max(self._recover_to, rate)
        self._recover = RECOVER if paused else RECOVER_UNPAUSED
        self._lowered_at = now

    def _recent_rate(self, now: float) -> float | None:
        """Successes over about the last second, or None on too little evidence.

        Over a second even when the run is younger: a burst the server allowed at the start
        (a full token bucket) is not a rate it keeps up.
        """
        share_of_previous = max(0.0, 1.0 - (now - self._window_start) / WINDOW)
        count = self._current + self._previous * share_of_previous
        if count < MIN_EVIDENCE:
            return None
        return count / WINDOW


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
        self.known = self._accounts.get  # an account's rate if it has one yet, else None
        self.now = clock  # seconds on the clock the rates are paced by
        self._sleep = sleep

    def of(self, account: str) -> AccountRate:
        rate = self._accounts.get(account)
        if rate is None:
            rate = self._accounts[account] = AccountRate(self._ceiling)
        return rate

    async def sleep(self, seconds: float) -> None:
        """Wait on the clock the rates are paced by."""
        await self._sleep(seconds)

    def limited(self, rate: AccountRate, sent_at: float, exc: RateLimited) -> None:
        """The request sent at ``sent_at`` met a 429: learn from it, or raise
        :class:`~bulk_secrets.errors.WaitTooLong` when its Retry-After is past ``max_wait``."""
        if exc.retry_after is not None and exc.retry_after > self._max_wait:
            raise WaitTooLong(
                f"the server asked to wait {exc.retry_after:.0f}s (Retry-After), more than "
                f"the {self._max_wait:g}s the run may wait",
                status=exc.status,
            ) from exc
        rate.rate_limited(sent_at, self.now(), exc.retry_after)

    async def wait_turn(self, rate: AccountRate, start: float) -> float:
        """Sleep until the slot taken at ``start``; take another if a pause came meanwhile."""
        while True:
            await self._sleep(max(0.0, start - self.now()))  # time may have passed it
            now = self.now()
            if now >= rate.paused_until:
                return start
            start = rate.reserve(now)
