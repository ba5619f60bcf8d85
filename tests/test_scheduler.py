"""The scheduler: accounts take turns, a paused account does not hold the others, memory is
bounded by the window."""

from __future__ import annotations

import pytest

from bulk_secrets.models import Action, Status, Step, Target
from bulk_secrets.ratelimit import Rates
from bulk_secrets.scheduler import Scheduler

pytestmark = pytest.mark.anyio


def steps(account: str, count: int, **fields: object) -> list[Step]:
    return [
        Step(
            target=Target(account=account, key_name=f"K{i}", secret_id=f"k{i}", location=f"m:{i}"),
            action=Action.CREATE,
            **fields,  # type: ignore[arg-type]
        )
        for i in range(count)
    ]


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_a_paused_account_does_not_hold_the_others() -> None:
    clock = Clock()
    rates = Rates(0, clock=clock)
    rates.of("slow").rate_limited(sent_at=50.0, now=50.0, retry_after=30.0)
    scheduler = Scheduler(steps("slow", 5) + steps("fast", 5), rates, window=100)
    taken = [await scheduler.take() for _ in range(5)]
    assert [step.target.account for step in taken if step] == ["fast"] * 5


async def test_ready_accounts_take_turns_by_steps_in_flight() -> None:
    rates = Rates(0, clock=Clock())
    scheduler = Scheduler(steps("a", 6) + steps("b", 6), rates, window=100)
    order = []
    for _ in range(6):  # none finishes: in-flight counts decide
        step = await scheduler.take()
        assert step is not None
        order.append(step.target.account)
    assert order == ["a", "b", "a", "b", "a", "b"]


async def test_settled_steps_go_first_and_count_nothing_in_flight() -> None:
    rates = Rates(0, clock=Clock())
    settled = steps("a", 2, outcome=Status.SKIPPED, reason="done")
    scheduler = Scheduler(steps("b", 1) + settled, rates, window=100)
    taken = [await scheduler.take() for _ in range(3)]
    assert [(s.target.account, s.outcome) for s in taken if s] == [
        ("a", Status.SKIPPED),
        ("a", Status.SKIPPED),
        ("b", None),
    ]
    assert await scheduler.take() is None
    for step in taken:
        assert step is not None
        scheduler.done(step)  # settled steps were never counted in flight


async def test_reads_the_plan_ahead_by_the_window_only() -> None:
    produced = 0

    def plan() -> object:
        nonlocal produced
        for step in steps("a", 1000):
            produced += 1
            yield step

    scheduler = Scheduler(plan(), Rates(0, clock=Clock()), window=8)  # type: ignore[arg-type]
    await scheduler.take()
    assert produced == 8
    assert len(list(scheduler.remaining())) == 999
