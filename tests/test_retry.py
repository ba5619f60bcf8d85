"""The retry policy, with time injected: no test waits on the clock."""

from __future__ import annotations

import pytest

from bulk_secrets import errors
from bulk_secrets.options import RetryOptions
from bulk_secrets.retry import RetryPolicy

pytestmark = pytest.mark.anyio


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """Fails with the given errors in turn, then answers 200."""

    def __init__(self, *failures: errors.ApiError) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return 200


def policy(retries: int = 3) -> tuple[RetryPolicy, FakeSleep]:
    sleep = FakeSleep()
    options = RetryOptions(retries=retries, backoff_initial=0.5, backoff_max=4.0)
    return RetryPolicy(options, sleep=sleep), sleep


async def test_success_first_time_never_sleeps() -> None:
    retry, sleep = policy()
    op = Flaky()
    assert await retry.call(op) == 200
    assert (op.calls, sleep.waits) == (1, [])


async def test_transient_failures_are_retried_with_growing_waits() -> None:
    retry, sleep = policy()
    op = Flaky(
        errors.ServerError("x", status=503),
        errors.ConnectionFailed("y"),
        errors.RequestTimeout("z"),
    )
    assert await retry.call(op) == 200
    assert op.calls == 4
    assert len(sleep.waits) == 3
    # Full jitter: wait n is drawn from [0, 0.5 * 2**(n - 1)].
    assert all(0 <= w <= 0.5 * 2**n for n, w in enumerate(sleep.waits))


async def test_capped_waits_stay_spread() -> None:
    """Full jitter: past the cap, waits are drawn below it, not all set to it."""
    retry, sleep = policy(retries=12)
    op = Flaky(*(errors.ServerError("x", status=503) for _ in range(12)))
    assert await retry.call(op) == 200
    capped = sleep.waits[4:]  # 0.5 * 2**4 = 8 > the cap of 4
    assert all(0 <= w <= 4.0 for w in capped)
    assert len(set(capped)) == len(capped)  # spread, where a clamped backoff gives 4.0 each


async def test_gives_up_after_the_allowed_retries_with_the_last_error() -> None:
    retry, sleep = policy(retries=2)
    op = Flaky(*(errors.ServerError(f"e{i}", status=500) for i in range(5)))
    with pytest.raises(errors.ServerError, match="e2"):
        await retry.call(op)
    assert op.calls == 3
    assert len(sleep.waits) == 2


async def test_rejections_are_not_retried() -> None:
    retry, sleep = policy()
    op = Flaky(errors.InvalidArgument("bad", status=400))
    with pytest.raises(errors.InvalidArgument):
        await retry.call(op)
    assert (op.calls, sleep.waits) == (1, [])


async def test_retry_after_sets_the_wait() -> None:
    retry, sleep = policy()
    op = Flaky(errors.RateLimited("slow down", retry_after=7.0))
    assert await retry.call(op) == 200
    assert len(sleep.waits) == 1
    assert 7.0 <= sleep.waits[0] <= 7.0 * 1.1


async def test_zero_retries_means_one_attempt() -> None:
    retry, sleep = policy(retries=0)
    op = Flaky(errors.ServerError("x", status=503))
    with pytest.raises(errors.ServerError):
        await retry.call(op)
    assert (op.calls, sleep.waits) == (1, [])


async def test_stopped_run_does_not_retry() -> None:
    retry, _ = policy()
    op = Flaky(errors.ServerError("x", status=503))
    with pytest.raises(errors.ServerError):
        await retry.call(op, stopped=lambda: True)
    assert op.calls == 1


async def test_run_stopped_during_the_wait_abandons_the_retry() -> None:
    state = {"stopped": False}
    sleep = FakeSleep()

    async def stop_while_sleeping(seconds: float) -> None:
        await sleep(seconds)
        state["stopped"] = True

    retry = RetryPolicy(RetryOptions(retries=3), sleep=stop_while_sleeping)
    op = Flaky(errors.ServerError("x", status=503))
    with pytest.raises(errors.RetryAbandoned):
        await retry.call(op, stopped=lambda: state["stopped"])
    assert op.calls == 1
