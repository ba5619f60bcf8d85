"""The scheduler: accounts take turns, a paused account does not hold the others, memory is
bounded by the window."""

from __future__ import annotations

import math

import anyio
import pytest

from bulk_secrets.models import Action, SecretSpec, SecretValue, Status, Step, Target
from bulk_secrets.options import ApplyOptions, OnExisting
from bulk_secrets.planner import Listing, Plan
from bulk_secrets.policy import Policy
from bulk_secrets.ratelimit import AccountRate, Rates
from bulk_secrets.scheduler import ListAccount, Scheduler, Work

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


def stepped(work: Work | float | None) -> Step:
    assert isinstance(work, Step)
    return work


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_a_paused_account_does_not_hold_the_others() -> None:
    clock = Clock()
    rates = Rates(0, clock=clock)
    rates.of("slow").rate_limited(sent_at=50.0, now=50.0, retry_after=30.0)
    scheduler = Scheduler(steps("slow", 5) + steps("fast", 5), rates, window=100)
    taken = [stepped(await scheduler.take()) for _ in range(5)]
    assert [step.target.account for step in taken] == ["fast"] * 5


async def test_ready_accounts_take_turns_by_steps_in_flight() -> None:
    rates = Rates(0, clock=Clock())
    scheduler = Scheduler(steps("a", 6) + steps("b", 6), rates, window=100)
    order = []
    for _ in range(6):  # none finishes: in-flight counts decide
        order.append(stepped(await scheduler.take()).target.account)
    assert order == ["a", "b", "a", "b", "a", "b"]


async def test_settled_steps_go_first_and_count_nothing_in_flight() -> None:
    rates = Rates(0, clock=Clock())
    settled = steps("a", 2, outcome=Status.SKIPPED, reason="done")
    scheduler = Scheduler(steps("b", 1) + settled, rates, window=100)
    taken = [stepped(await scheduler.take()) for _ in range(3)]
    assert [(s.target.account, s.outcome) for s in taken] == [
        ("a", Status.SKIPPED),
        ("a", Status.SKIPPED),
        ("b", None),
    ]
    assert await scheduler.take() is None
    for step in taken:
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


def specs(account: str, count: int) -> list[SecretSpec]:
    return [
        SecretSpec(
            account=account,
            key_name=f"K{i}",
            secret_id=f"k{i}",
            location=f"m:{i}",
            value=SecretValue("v"),
        )
        for i in range(count)
    ]


def planned() -> Plan:
    return Plan(ApplyOptions(), Policy(OnExisting.FAIL), {})


async def test_an_account_is_listed_when_first_met_and_its_specs_wait_for_it() -> None:
    plan = planned()
    scheduler = Scheduler(
        specs("a", 2) + specs("b", 2), Rates(0, clock=Clock()), window=100, plan=plan
    )
    assert scheduler.take_now() == ListAccount("a")
    assert scheduler.take_now() == ListAccount("b")
    assert scheduler.take_now() == math.inf  # nothing to do until a listing ends
    scheduler.listed("b", Listing(secrets={"k1": "K1"}))
    first, second = (scheduler.take_now(), scheduler.take_now())
    assert isinstance(first, Step) and isinstance(second, Step)
    assert (first.target.key_name, first.outcome) == ("K1", Status.FAILED)  # settled: first
    assert (second.target.key_name, second.action, second.outcome) == ("K0", Action.CREATE, None)
    assert [s.target.account for s in scheduler.remaining()] == ["a", "a"]


async def test_specs_waiting_for_a_listing_count_in_the_window() -> None:
    scheduler = Scheduler(specs("a", 50), Rates(0, clock=Clock()), window=8, plan=planned())
    assert scheduler.take_now() == ListAccount("a")
    left = list(scheduler.remaining())
    assert len(left) == 50
    assert {(s.outcome, s.action) for s in left} == {(Status.NOT_ATTEMPTED, Action.CREATE)}


async def test_a_waiting_worker_wakes_when_a_listing_ends() -> None:
    scheduler = Scheduler(specs("a", 1), Rates(0, clock=Clock()), window=8, plan=planned())
    assert await scheduler.take() == ListAccount("a")
    taken: list[Work | None] = []
    async with anyio.create_task_group() as group:

        async def worker() -> None:
            taken.append(await scheduler.take())

        group.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        assert taken == []
        scheduler.listed("a", Listing())
    assert stepped(taken[0]).target.key_name == "K0"


async def test_a_slow_account_does_not_gather_the_workers() -> None:
    """Steps in flight decide: one that never answers is not given a second worker while
    another account's steps come back."""
    scheduler = Scheduler(
        steps("slow", 20) + steps("fast", 20), Rates(0, clock=Clock()), window=100
    )
    taken = []
    for _ in range(12):
        step = stepped(await scheduler.take())
        taken.append(step.target.account)
        if step.target.account == "fast":
            scheduler.done(step)  # answered at once; "slow" never answers
    assert taken == ["slow"] + ["fast"] * 11


async def test_accounts_that_may_not_send_yet_are_not_looked_at_again_until_they_may(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 accounts at 1 request a second, each with a request just sent: a take looks at each
    once, then at none until a second has passed, then at the one it takes."""
    looked = 0
    ready_at = AccountRate.ready_at

    def counted(rate: AccountRate) -> float:
        nonlocal looked
        looked += 1
        return ready_at(rate)

    monkeypatch.setattr(AccountRate, "ready_at", counted)
    clock = Clock()
    rates = Rates(1.0, clock=clock)
    names = [f"a{i:03d}" for i in range(100)]
    scheduler = Scheduler([s for name in names for s in steps(name, 3)], rates, window=300)
    for name in names:  # the first step of each account, sent: its next slot is in a second
        step = stepped(scheduler.take_now())
        assert step.target.account == name
        rates.of(name).reserve(clock.now)
        scheduler.done(step)
    looked = 0
    assert scheduler.take_now() == pytest.approx(1.0)
    assert looked == 100  # each found not ready, once
    assert scheduler.take_now() == pytest.approx(1.0)
    assert looked == 100  # and not looked at again
    clock.now += 1.0
    taken = [stepped(scheduler.take_now()).target.account for _ in names]
    assert taken == names  # in the order they came to wait
    assert looked == 200  # one look per take


async def test_what_waits_for_its_turn_is_still_remaining_when_the_run_ends() -> None:
    """A run stopped (a signal, the deadline) while accounts wait in the heap: their queued
    steps are handed back as remaining, so the report still names them."""
    clock = Clock()
    rates = Rates(1.0, clock=clock)
    scheduler = Scheduler(steps("a", 3) + steps("b", 3), rates, window=100)
    for _ in range(2):  # one step of each account sent: the next slots are a second away
        step = stepped(scheduler.take_now())
        rates.of(step.target.account).reserve(clock.now)
        scheduler.done(step)
    assert scheduler.take_now() == pytest.approx(1.0)  # both wait in the heap now
    left = list(scheduler.remaining())
    assert sorted((s.target.account, s.target.key_name) for s in left) == [
        ("a", "K1"), ("a", "K2"), ("b", "K1"), ("b", "K2"),
    ]  # fmt: skip
    assert scheduler.take_now() is None


async def test_a_lone_account_waits_for_its_slot() -> None:
    """One account alone takes no turns, but its rate still paces it."""
    clock = Clock()
    rates = Rates(1.0, clock=clock)
    scheduler = Scheduler(steps("a", 2), rates, window=8)
    assert stepped(scheduler.take_now()).target.key_name == "K0"
    rates.of("a").reserve(clock.now)
    assert scheduler.take_now() == pytest.approx(1.0)
    clock.now += 1.0
    assert stepped(scheduler.take_now()).target.key_name == "K1"


async def test_a_lone_accounts_steps_in_flight_count_when_a_second_account_comes() -> None:
    """The newcomer, with no step in flight, goes before the first account's next steps
    until it has as many in flight."""
    scheduler = Scheduler(steps("a", 4) + steps("b", 4), Rates(0, clock=Clock()), window=4)
    # The first read takes a's 4; half of them taken, the next read brings b's first 2.
    order = [stepped(scheduler.take_now()).target.account for _ in range(8)]  # none finishes
    assert order == ["a", "a", "b", "b", "a", "b", "a", "b"]


async def test_an_account_alone_again_after_the_others_is_forgotten_when_done() -> None:
    """The lone account's steps end after a second account came and went: every step ends
    once, and the scheduler forgets both accounts."""
    scheduler = Scheduler(steps("a", 1) + steps("b", 1), Rates(0, clock=Clock()), window=1)
    a = stepped(scheduler.take_now())
    b = stepped(scheduler.take_now())  # b comes while a is in flight, its queue empty
    assert (a.target.account, b.target.account) == ("a", "b")
    assert scheduler.take_now() is None
    scheduler.done(a)
    scheduler.done(b)
    assert list(scheduler.remaining()) == []
    assert scheduler._accounts == {}


async def test_a_lone_account_is_forgotten_when_its_last_step_ends() -> None:
    scheduler = Scheduler(steps("a", 2), Rates(0, clock=Clock()), window=8)
    first, second = stepped(scheduler.take_now()), stepped(scheduler.take_now())
    scheduler.done(first)
    assert list(scheduler._accounts) == ["a"]  # a step still in flight
    scheduler.done(second)
    assert scheduler._accounts == {}


async def test_a_lone_accounts_queued_steps_are_remaining_when_the_run_ends() -> None:
    """A run of one account stopped (a signal, the deadline) with steps queued and in flight:
    the queued ones are handed back, so the report still names them."""
    scheduler = Scheduler(steps("a", 5), Rates(0, clock=Clock()), window=4)
    taken = stepped(scheduler.take_now())
    left = [s.target.key_name for s in scheduler.remaining()]
    assert taken.target.key_name not in left
    assert left == ["K1", "K2", "K3", "K4"]
    assert scheduler.take_now() is None


async def test_a_read_of_specs_and_steps_of_several_accounts_queues_each_once_in_order() -> None:
    """One read ahead holding steps, then specs of two accounts, one listed already and one
    not: every item comes out once, each account's in the run's order."""
    plan = planned()
    plan.listings["a"] = Listing(secrets={"k1": "K1"})  # a's K1 is there: settled (FAILED)
    items: list[Step | SecretSpec] = [*steps("x", 2), *specs("a", 3), *specs("b", 2)]
    items += specs("a", 5)[3:]
    scheduler = Scheduler(items, Rates(0, clock=Clock()), window=100, plan=plan)
    taken: list[tuple[str, str, Status | None]] = []
    while (work := scheduler.take_now()) is not None:
        if isinstance(work, ListAccount):
            scheduler.listed(work.account, Listing())
            continue
        step = stepped(work)
        taken.append((step.target.account, step.target.key_name, step.outcome))
        scheduler.done(step)
    assert sorted(taken) == sorted(
        [("x", "K0", None), ("x", "K1", None), ("b", "K0", None), ("b", "K1", None)]
        + [("a", f"K{i}", Status.FAILED if i == 1 else None) for i in range(5)]
    )
    for account in "bx":
        assert [key_name for name, key_name, _ in taken if name == account] == ["K0", "K1"]
    assert [k for name, k, outcome in taken if name == "a" and outcome is None] == [
        "K0",
        "K2",
        "K3",
        "K4",
    ]
