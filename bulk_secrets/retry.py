"""The retry policy, as tenacity objects: the only module that imports tenacity.

Only :class:`~bulk_secrets.errors.TransientError` is retried. Waits are exponential with full
jitter, or the server's Retry-After when a 429 carries one. The first attempt runs outside
tenacity, so a request that succeeds first time pays nothing for the retry machinery; only a
failure enters it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import tenacity
from tenacity.stop import stop_base

from .errors import RateLimited, RetryAbandoned, TransientError
from .options import RetryOptions

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# Spread the retries of many requests told to wait the same Retry-After.
_RETRY_AFTER_SPREAD = 0.1


class _StopWhen(stop_base):
    """Stop retrying as soon as ``stopped()`` says so."""

    def __init__(self, stopped: Callable[[], bool]) -> None:
        self._stopped = stopped

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._stopped()


class RetryPolicy:
    """Runs an operation, retrying its transient failures."""

    def __init__(
        self,
        options: RetryOptions,
        *,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng or random.Random()
        # Full jitter: each wait is drawn from [0, min(max, initial * 2**(attempt - 1))], so
        # capped waits stay spread rather than all landing on the cap at once.
        self._backoff = tenacity.wait_random_exponential(
            multiplier=options.backoff_initial, max=options.backoff_max
        )
        self._attempts = tenacity.stop_after_attempt(options.attempts)
        self._retrying = tenacity.AsyncRetrying(
            stop=self._attempts,
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientError),
            sleep=sleep,
            reraise=True,
        )
        self._retries_allowed = options.retries > 0
        self.retries = 0  # retries made so far, by every call

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after * (1 + self._rng.uniform(0, _RETRY_AFTER_SPREAD))
        return float(self._backoff(state))

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        stopped: Callable[[], bool] = lambda: False,
    ) -> T:
        """Await ``operation()``; retry its transient failures until ``stopped()`` says no more."""
        try:
            return await operation()
        except TransientError as exc:
            return await self.after(exc, operation, stopped=stopped)

    async def after(
        self,
        failure: TransientError,
        operation: Callable[[], Awaitable[T]],
        *,
        stopped: Callable[[], bool] = lambda: False,
    ) -> T:
        """Retry ``operation``, whose first attempt (made by the caller) failed with ``failure``.

        Only here does tenacity run: a request that succeeded first time never gets here.
        """
        if not self._retries_allowed or stopped():
            raise failure
        first: TransientError | None = failure

        async def replay_then_retry() -> T:
            # Tenacity's attempt 1 is the failure above, replayed; attempt 2 is the first retry.
            nonlocal first
            if first is not None:
                replayed, first = first, None
                raise replayed
            if stopped():
                raise RetryAbandoned("retry abandoned: the run was stopped")
            self.retries += 1
            return await operation()

        retrying = self._retrying.copy(stop=self._attempts | _StopWhen(stopped))
        return await retrying(replay_then_retry)
