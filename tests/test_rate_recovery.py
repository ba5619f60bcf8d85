"""Sporadic 429s end to end: the real client against the emulator over loopback sockets.

The emulator refuses a seeded random share of requests with ``Retry-After: 1`` (or with no
Retry-After at all); the client
and the emulator share one virtual clock, so every pause and the latency take no real time.
Every secret must end written, and each 429 the emulator injected must have been met by the
client and retried once. (How little the 429s cost in goodput is shown in
``test_ratelimit.py``, on a simulated clock that keeps exact time.)
"""

from __future__ import annotations

import random

import pytest

from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.models import Status
from bulk_secrets.provision import apply_secrets

from .helpers import ACCOUNT, API_KEY, credentials, options, specs
from .virtual_clock import VirtualClock

pytestmark = pytest.mark.anyio

SECRETS = 300


def injected(faults: Faults, requests: int) -> int:
    """The 429s a ``rate_limit_share`` fault draws for ``requests`` requests: with no other
    random knob and no bucket, the emulator draws one number per request, in order."""
    draws = random.Random(faults.seed)
    return sum(draws.random() < faults.rate_limit_share for _ in range(requests))


@pytest.mark.parametrize("share", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("max_rps", [50.0, 0.0], ids=["default-cap", "no-cap"])
@pytest.mark.parametrize("retry_after", [True, False], ids=["retry-after", "none"])
async def test_every_secret_is_written_through_sporadic_429s(
    share: float, max_rps: float, retry_after: bool
) -> None:
    clock = VirtualClock()
    faults = Faults(rate_limit_share=share, latency=0.02, seed=3, retry_after=retry_after)
    wanted = specs(SECRETS)
    async with running_emulator(
        EmulatorConfig(keys={API_KEY: None}, faults=faults), clock=clock
    ) as server:
        started = clock.now()
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, concurrency=32, max_rps=max_rps),
            clock=clock,
        )
        stored = server.secrets(ACCOUNT)
        stats = server.stats
    assert summary.all_succeeded, summary.line()
    assert summary.count(Status.SUCCEEDED) == SECRETS
    assert {sid: v for sid, (_, v) in stored.items()} == {
        s.secret_id: s.value.reveal() for s in wanted
    }
    refused = stats.count(status=429)
    assert refused == injected(faults, stats.count())  # every 429 came from the fault
    assert refused > 0
    assert summary.retries == refused  # and each was met, and retried once
    assert stats.count(status=200) == SECRETS + 1  # the writes and the listing, nothing more
    if retry_after:
        assert clock.now() - started >= 1.0  # a Retry-After was waited, virtually
