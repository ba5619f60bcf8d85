"""The emulator's fault knobs, :class:`Faults`, and how they act, :class:`FaultInjector`.

Faults are decided after authentication, and repeat with ``seed``:

- ``latency`` + uniform ``jitter``: extra seconds before each API request is handled, and
  ``write_latency`` more for each POST, PATCH and DELETE;
- ``rate_limit`` (requests/s per account) and ``burst``: a token bucket; excess gets 429, with
  ``Retry-After`` when ``retry_after`` is set (the default): the seconds until a token is free,
  rounded up, at least 1;
- ``retry_after_seconds``: when set (finite, >= 0; needs ``retry_after``), every such 429 says
  ``Retry-After: <that many seconds>`` instead, rounded up to whole seconds (``0``: retry at
  once, so a client honouring it does not wait). It says when, never whether, to come back;
- ``rate_limit_share``: a random share of API requests (of those the bucket let through)
  answered 429, as a server does whose limit others share, with no change applied and
  ``Retry-After: <retry_after_seconds>`` when that is set, else ``Retry-After: 1`` (none with
  ``retry_after=False``). Like the bucket's, these 429s come before the latency;
- ``error_rate``: a 500/502/503/504 with no change applied;
- ``drop_rate``: the TCP connection is closed with no answer and no change applied;
- ``write_then_fail_rate``: a successful POST/PATCH/DELETE is applied, then answered with a 503
  or a dropped connection (half each).

Time comes from the emulator's :class:`~bulk_secrets.clock.Clock`: the token bucket reads
``clock.now()`` and the latencies wait with ``clock.sleep()``, so a test's virtual clock drives
both.
"""

import math
import random
from dataclasses import dataclass
from typing import NoReturn

from ..clock import Clock
from .store import WRITE_METHODS, ErrorReply

SERVER_ERRORS = (500, 502, 503, 504)
DROP = 0  # the fault "drop the connection, answer nothing"; Stats counts it as status 0


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Faults to inject into API requests; all random choices come from one ``Random(seed)``."""

    latency: float = 0.0
    jitter: float = 0.0
    write_latency: float = 0.0
    rate_limit: float = 0.0  # requests per second per account; 0 = no limit
    burst: int | None = None  # bucket size; None = max(1, int(rate_limit))
    retry_after: bool = True
    retry_after_seconds: float | None = None  # a fixed Retry-After; None = the bucket's wait
    rate_limit_share: float = 0.0  # share of requests answered 429 at random
    error_rate: float = 0.0
    drop_rate: float = 0.0
    write_then_fail_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "write_latency", "rate_limit"):
            number = getattr(self, name)
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {number!r}")
        for name in ("rate_limit_share", "error_rate", "drop_rate", "write_then_fail_rate"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
        if self.retry_after_seconds is not None:
            seconds = self.retry_after_seconds
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(
                    f"retry_after_seconds must be a finite number >= 0 (or None), got {seconds!r}"
                )
            if not self.retry_after:
                raise ValueError("retry_after_seconds needs retry_after=True (it sets the header)")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1 (or None for the default), got {self.burst!r}")

    @property
    def bucket_size(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.rate_limit))


@dataclass
class TokenBucket:
    rate: float
    size: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token; return 0.0 on success, else the seconds until one is free."""
        self.tokens = min(float(self.size), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class FaultInjector:
    """One emulator's faults in action: a token bucket per account and one ``Random(seed)``.

    The handler asks, in this order: :meth:`take_token`, :meth:`delay`,
    :meth:`before_handling`, then (if the call succeeded) :meth:`after_handling`; a knob at 0
    draws no random number, so the same seed and requests give the same faults.
    """

    def __init__(self, faults: Faults, *, clock: Clock) -> None:
        self.faults = faults
        self._clock = clock
        self._rng = random.Random(faults.seed)
        self._buckets: dict[str, TokenBucket] = {}

    def take_token(self, account: str) -> None:
        """Raise a 429 :class:`ErrorReply` if the account's bucket is empty, or if the request
        is one of the ``rate_limit_share`` refused at random."""
        faults = self.faults
        if faults.rate_limit > 0:
            now = self._clock.now()
            if account not in self._buckets:  # a new account starts with a full bucket
                size = faults.bucket_size
                self._buckets[account] = TokenBucket(faults.rate_limit, size, size, now)
            wait = self._buckets[account].take(now)
            if wait > 0:
                self._refuse(account, wait)
        if self._chance(faults.rate_limit_share):
            self._refuse(account, 1.0)

    def _refuse(self, account: str, wait: float) -> NoReturn:
        headers = {"Retry-After": self._retry_after(wait)} if self.faults.retry_after else {}
        raise ErrorReply(429, f"rate limit exceeded for account {account!r}", headers)

    def _retry_after(self, wait: float) -> str:
        fixed = self.faults.retry_after_seconds
        return str(math.ceil(fixed) if fixed is not None else max(1, math.ceil(wait)))

    async def delay(self, method: str) -> None:
        delay = self.faults.latency
        if method in WRITE_METHODS:
            delay += self.faults.write_latency
        if self.faults.jitter > 0:
            delay += self._rng.random() * self.faults.jitter
        if delay > 0:
            await self._clock.sleep(delay)

    def before_handling(self) -> int | None:
        """What to do instead of handling the request: :data:`DROP`, a 5xx status to answer,
        or None to handle it."""
        if self._chance(self.faults.drop_rate):
            return DROP
        if self._chance(self.faults.error_rate):
            return self._rng.choice(SERVER_ERRORS)
        return None

    def after_handling(self, method: str) -> int | None:
        """What to do instead of answering a handled request: :data:`DROP`, 503, or None to
        answer it."""
        if method in WRITE_METHODS and self._chance(self.faults.write_then_fail_rate):
            return DROP if self._rng.random() < 0.5 else 503
        return None

    def _chance(self, share: float) -> bool:
        return share > 0 and self._rng.random() < share
