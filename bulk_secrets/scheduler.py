"""Hands work to the workers: an account's listing as soon as the account is met, then its steps,
so that accounts share the concurrency fairly and writes start before every account is listed.

The run is read ahead by at most ``window`` items, a chunk at a time once half of them are
taken. An item is a step (settled by the plan, or to carry out) or a spec still to decide. A
spec of an account not listed yet waits, and the account's listing is handed to the next free
worker; once it is done, the account's specs are decided by the plan and queue as steps (a run
of one account's new secrets in one go: ``Plan.creates``). An account's listing is dropped
when its last spec is decided (``expected`` says how many each account has; a run of one
account keeps its one listing), so memory grows with the accounts in the window, not with
every account of the run.

A free worker gets, in turn: a settled step (no request, nothing to wait for), a listing to
start, or the head of the account that may send soonest (its rate and any Retry-After pause)
and, among those ready, the one with the fewest steps in flight. So an account that is paused
or slow does not hold every worker while others have work.

An account found not ready (its next slot, or a pause, still to come) waits in a heap by the
time it may send, out of the turns, and rejoins them at that time: an account's ready time only
moves later until it sends, so a take looks at the accounts that are ready, not at every
account with work (1,000 accounts at 50/s each: 33 looked at per take before, about 1 now).

While one account alone has steps queued or in flight (a run of one account, the usual case),
it has no turns to take: it stays out of the tiers and the heap, and a take or a step's end
only counts its steps in flight. When a second account comes, the first joins the turns.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, cast

import anyio

from .models import Action, SecretSpec, Status, Step
from .planner import Listing, Plan
from .ratelimit import AccountRate, Rates


class ListAccount(NamedTuple):
    """Work for a worker: list ``account``, then tell :meth:`Scheduler.listed`."""

    account: str


Work = Step | ListAccount


class Scheduler:
    def __init__(
        self,
        items: Iterable[Step | SecretSpec],
        rates: Rates,
        *,
        window: int,
        plan: Plan | None = None,
        expected: Mapping[str, int] | None = None,
    ) -> None:
        self._items = iter(items)
        self._rates = rates
        self._window = window
        self._plan = plan
        # Specs not decided yet, by account, so that a listing goes once its account's last spec
        # is decided. Not counted for one account: its listing goes with the run.
        self._left = None if expected is None or len(expected) < 2 else dict(expected)
        self._settled: deque[Step] = deque()  # steps the plan settled: no request
        self._accounts: dict[str, _Account] = {}  # accounts with steps queued or in flight
        self._lone: _Account | None = None  # the only one of them, out of the turns
        # The accounts with steps queued, by steps in flight; each tier in turn order.
        self._tiers: dict[int, dict[str, _Account]] = {}
        # The accounts with steps queued that may not send yet, by when they may: (time, order).
        self._later: list[tuple[float, int, _Account]] = []
        self._order = itertools.count()
        self._unlisted: dict[str, list[SecretSpec]] = {}  # specs waiting for a listing
        self._to_list: deque[str] = deque()  # listings no worker has taken yet
        self._queued = 0
        self._refill_at = window // 2  # read on when no more than this is queued
        self._waiting = anyio.Lock()
        self._listed = anyio.Event()  # set when a listing ends; made anew once seen

    async def take(self) -> Work | None:
        """The next work, or None when there is no more; waits for a turn or a listing."""
        chosen = self.take_now()
        if not isinstance(chosen, float):
            return chosen
        async with self._waiting:  # one worker at a time waits; the rest queue here
            while isinstance(chosen := self.take_now(), float):
                await self._wait(chosen)
            return chosen

    async def _wait(self, seconds: float) -> None:
        """Until a moment in time (a rate's next slot) or, if sooner, a listing's end."""
        listed = self._listed
        if listed.is_set():
            self._listed = anyio.Event()
            return
        if not self._unlisted:  # no listing under way: only time can change what is ready
            await self._rates.sleep(seconds)
            return
        if math.isinf(seconds):
            await listed.wait()
            return
        async with anyio.create_task_group() as group:

            async def slot() -> None:
                await self._rates.sleep(seconds)
                group.cancel_scope.cancel()

            group.start_soon(slot)
            await listed.wait()
            group.cancel_scope.cancel()

    def take_now(self) -> Work | float | None:
        """Work that may start now, else the seconds until some may (``inf``: until a listing
        ends), else None (no more)."""
        if self._queued <= self._refill_at:
            self._fill()
        if self._settled:
            self._queued -= 1
            return self._settled.popleft()
        if self._to_list:
            return ListAccount(self._to_list.popleft())
        lone = self._lone
        if lone is not None:
            if not lone.queue:
                return math.inf if self._unlisted else None
            wait = lone.rate.ready_at() - self._rates.now()
            if wait > 0:
                return wait
            self._queued -= 1
            lone.flying += 1
            return lone.queue.popleft()
        tiers, later = self._tiers, self._later
        if not tiers and not later:
            return math.inf if self._unlisted else None
        now = self._rates.now()
        while later and later[0][0] <= now:  # their time has come: back in turn, last
            account = heapq.heappop(later)[2]
            account.waiting = False
            tiers.setdefault(account.flying, {})[account.name] = account
        # Fewest in flight first; within a tier, the account served longest ago first. The
        # first one ready is taken; one that is not waits in the heap.
        while tiers:
            flying = min(tiers)
            tier = tiers[flying]
            while tier:
                account = next(iter(tier.values()))
                ready = account.rate.ready_at()
                if ready <= now:
                    return self._pop(account)
                del tier[account.name]
                account.waiting = True
                heapq.heappush(later, (ready, next(self._order), account))
            del tiers[flying]
        return later[0][0] - now

    def listed(self, account: str, listing: Listing) -> None:
        """``account``'s listing (taken as :class:`ListAccount`) ended: decide its specs."""
        assert self._plan is not None
        self._plan.listings[account] = listing
        specs = self._unlisted.pop(account, None)
        if specs:
            self._queued -= len(specs)
            self._queue_decided(account, specs)
        self._listed.set()

    def done(self, step: Step) -> None:
        """A step taken with :meth:`take` is finished."""
        if step.outcome is not None:
            return  # settled: never in flight
        account = self._accounts[step.target.account]
        if account is self._lone:
            account.flying -= 1
            if not account.flying and not account.queue:
                del self._accounts[account.name]
                self._lone = None
        elif account.waiting:  # it rejoins the turns at its new count
            account.flying -= 1
        elif account.queue:
            self._move(account, account.flying - 1)
        else:
            account.flying -= 1
            if not account.flying:
                del self._accounts[account.name]

    def remaining(self) -> Iterator[Step]:
        """Every step not taken yet: the queued ones, then the rest of the run, with specs not
        decided as steps never attempted."""
        yield from self._settled
        for account in self._accounts.values():
            yield from account.queue
            account.queue.clear()
        for specs in self._unlisted.values():
            yield from map(_undecided, specs)
        self._settled.clear()
        self._lone = None
        self._tiers.clear()
        self._later.clear()
        self._unlisted.clear()
        self._to_list.clear()
        self._queued = 0
        for item in self._items:
            yield item if isinstance(item, Step) else _undecided(item)

    def _fill(self) -> None:
        """Read the run ahead, up to ``window`` items (:meth:`take_now` calls it once half of
        that is taken): a chunk at a time, so that a run of one account's specs is decided and
        queued in one go, with no line of Python run per spec."""
        chunk = list(itertools.islice(self._items, self._window - self._queued))
        if not chunk:
            self._refill_at = -1  # the run is read: never again
            return
        for kind, run in itertools.groupby(chunk, type):
            if kind is SecretSpec:  # by account: a run of one account's specs in one go
                for account, specs in itertools.groupby(
                    cast("Iterator[SecretSpec]", run), _ACCOUNT
                ):
                    self._take_in(account, list(specs))
            else:  # steps: excluded, deletions, a failed source's
                for step in cast("Iterator[Step]", run):
                    self._add(step)

    def _take_in(self, account: str, specs: list[SecretSpec]) -> None:
        """Specs of one account, in order: decided now if it is listed, else waiting for its
        listing (handed to the next free worker)."""
        if self._plan is not None and account in self._plan.listings:
            self._queue_decided(account, specs)
            return
        waiting = self._unlisted.get(account)
        if waiting is None:
            waiting = self._unlisted[account] = []
            self._to_list.append(account)
        waiting.extend(specs)
        self._queued += len(specs)

    def _queue_decided(self, account: str, specs: list[SecretSpec]) -> None:
        """Decide specs of ``account`` (listed) by the plan, and queue their steps."""
        plan = self._plan
        assert plan is not None, "a spec to decide needs a plan"
        creates = plan.creates(account, specs)
        if creates is None:  # some of them are settled by the plan, or updates
            for spec in specs:
                self._add(plan.decide(spec))
        else:  # all plain creates: in one go
            self._queued += len(creates)
            self._account(account).queue.extend(creates)
        left = self._left
        if left is not None:
            count = left.get(account, 0) - len(specs)
            if count > 0:
                left[account] = count
            else:  # its last spec: the listing has served
                left.pop(account, None)
                plan.listings.pop(account, None)

    def _add(self, step: Step) -> None:
        self._queued += 1
        if step.outcome is not None:
            self._settled.append(step)
            return
        self._account(step.target.account).queue.append(step)

    def _account(self, name: str) -> _Account:
        """``name``'s account, about to queue steps: made if new, back in the turns if it had
        none queued."""
        account = self._accounts.get(name)
        if account is None:
            account = self._accounts[name] = _Account(name, self._rates.of(name))
            lone = self._lone
            if lone is not None:  # a second account: the first joins the turns
                self._lone = None
                if lone.queue:
                    self._tiers.setdefault(lone.flying, {})[lone.name] = lone
            elif len(self._accounts) == 1:
                self._lone = account
        if not account.queue and not account.waiting and account is not self._lone:
            # back among those with work
            self._tiers.setdefault(account.flying, {})[name] = account
        return account

    def _pop(self, account: _Account) -> Step:
        """The head of ``account``'s queue, now in flight."""
        step = account.queue.popleft()
        self._queued -= 1
        if account.queue:
            self._move(account, account.flying + 1)
        else:
            self._leave_tier(account)
            account.flying += 1
        return step

    def _move(self, account: _Account, flying: int) -> None:
        """To the tier of ``flying`` in flight, last in its turn."""
        tiers = self._tiers
        tier = tiers[account.flying]
        if len(tier) == 1 and flying not in tiers:  # alone in its tier: the tier moves with it
            del tiers[account.flying]
            tiers[flying] = tier
        else:
            self._leave_tier(account)
            tiers.setdefault(flying, {})[account.name] = account
        account.flying = flying

    def _leave_tier(self, account: _Account) -> None:
        tier = self._tiers[account.flying]
        del tier[account.name]
        if not tier:
            del self._tiers[account.flying]


_ACCOUNT = operator.attrgetter("account")


class _Account:
    """An account with steps queued or in flight."""

    __slots__ = ("flying", "name", "queue", "rate", "waiting")

    def __init__(self, name: str, rate: AccountRate) -> None:
        self.name = name
        self.rate = rate
        self.queue: deque[Step] = deque()
        self.flying = 0  # steps taken and not done
        self.waiting = False  # in the scheduler's heap of those that may not send yet


def _undecided(spec: SecretSpec) -> Step:
    """A spec the run ended before deciding: a create, never attempted (the reason is the
    runner's to give)."""
    return Step.settled(spec, Action.CREATE, Status.NOT_ATTEMPTED, None)
