"""The per-account rate: pacing, AIMD and Retry-After, on a fake clock."""

from __future__ import annotations

import pytest

from bulk_secrets.errors import RateLimited, ServerError
from bulk_secrets.ratelimit import DECREASE, AccountRate, Rates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_cap_paces_requests_evenly() -> None:
    rate = AccountRate(10.0)
    starts = [rate.reserve(100.0) for _ in range(5)]
    assert starts == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])


def test_no_cap_means_no_pacing() -> None:
    rate = AccountRate(None)
    assert [rate.reserve(100.0) for _ in range(3)] == [100.0, 100.0, 100.0]


def test_a_429_cuts_once_per_burst_and_success_raises_slowly() -> None:
    rate = AccountRate(100.0)
    for i in range(100):  # a second at the cap
        rate.succeeded(100.0 + i / 100)
    rate.rate_limited(sent_at=101.0, now=101.0, retry_after=None)
    cut = rate.rate
    assert cut == pytest.approx(DECREASE * 100.0, rel=0.02)
    rate.rate_limited(sent_at=100.99, now=101.01, retry_after=None)  # same burst: no new cut
    assert rate.rate == cut
    assert cut is not None
    for i in range(int(cut)):  # a second of successes: +1% of the rate
        rate.succeeded(101.1 + i / cut)
    assert rate.rate == pytest.approx(cut * 1.01, rel=0.01)


def test_the_cut_starts_from_what_got_through() -> None:
    """Uncapped, 200 got through in the last second: the new rate is just under that."""
    rate = AccountRate(None)
    for i in range(200):
        rate.succeeded(100.0 + i / 200)
    rate.rate_limited(sent_at=101.0, now=101.0, retry_after=None)
    assert rate.rate == pytest.approx(DECREASE * 200, rel=0.05)


def test_no_cut_without_evidence_while_uncapped() -> None:
    rate = AccountRate(None)
    rate.rate_limited(sent_at=100.0, now=100.0, retry_after=None)
    assert rate.rate is None


def test_retry_after_pauses_the_whole_account() -> None:
    rate = AccountRate(None)
    rate.rate_limited(sent_at=100.0, now=100.0, retry_after=2.0)
    assert rate.ready_at() == 102.0
    assert rate.reserve(100.5) == 102.0


@pytest.mark.anyio
async def test_rates_call_waits_its_turn_and_learns() -> None:
    clock = Clock()
    rates = Rates(4.0, clock=clock, sleep=clock.sleep)

    async def ok() -> int:
        return 200

    async def limited() -> int:
        raise RateLimited("slow down", retry_after=3.0)

    async def broken() -> int:
        raise ServerError("no", status=503)

    assert [await rates.call("a", ok) for _ in range(3)] == [200, 200, 200]
    assert clock.sleeps == pytest.approx([0.25, 0.25])
    with pytest.raises(RateLimited):
        await rates.call("a", limited)
    assert rates.of("a").paused_until == pytest.approx(clock.now + 3.0)
    assert rates.of("b").ready_at() <= clock.now  # other accounts go on
    with pytest.raises(ServerError):  # neither success nor 429: the rate stays
        await rates.call("b", broken)


@pytest.mark.anyio
async def test_a_turn_already_past_sleeps_no_negative_time() -> None:
    """Time goes on between taking a slot and sleeping for it: the sleep is then zero."""
    ticks = iter(100.0 + 0.1 * i for i in range(1000))  # slots are 0.25 s apart
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be a non-negative number")  # as anyio.sleep does
        sleeps.append(seconds)

    rates = Rates(4.0, clock=lambda: next(ticks), sleep=sleep)

    async def ok() -> int:
        return 200

    for _ in range(5):
        assert await rates.call("a", ok) == 200
    assert sleeps and all(seconds >= 0 for seconds in sleeps)
