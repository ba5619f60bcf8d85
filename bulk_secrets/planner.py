"""Plan: list what each target account holds, then decide one action per secret.

Each account is listed once, all pages, before any of its secrets is written: by a worker of
the runner when the run first meets the account, or, for ``prune``, ``plan`` and ``verify``,
every account first (:func:`list_accounts`). A secret that is not there
is created; one that is there is updated, skipped or failed as ``on_existing`` says (or skipped
when the ``state`` shows its value unchanged). With ``prune``, every listed secret that no
manifest names, and that no ``keep`` glob spares, is deleted, after all the writes. Races with
other writers still converge at execution: a 409 on create becomes an update, a 404 on update
becomes a create.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from . import errors
from .events import QUIET, Observer
from .models import CREATE, UPDATE, Action, ExistingSecret, SecretSpec, Status, Step, Target
from .options import ApplyOptions
from .policy import Gate, Policy, Sent, Stops, Why
from .ratelimit import Rates
from .retry import RetryPolicy
from .state import State


class Lister(Protocol):
    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]: ...


# A listing the server does not let end is cut short: no account holds this much.
MAX_PAGES = 10_000
MAX_LISTED = 500_000
REPEATED = "the server sent a page token it had sent before: the listing would never end"
TOO_MANY = f"the listing went past {MAX_PAGES} pages or {MAX_LISTED} secrets"
NOT_DELETED = "listed under a name that is not a valid secret id: not deleted"
LISTED = "listed"  # the source of a target found in a listing
LISTED_INVALID = "listed, under a name that is not a valid id"
_SECRET_ID = operator.attrgetter("secret_id")


@dataclass
class Listing:
    """What one account holds (id -> keyName), or why it could not be listed. Names listed
    that are not valid secret ids of the account are kept apart: they go into no URL."""

    secrets: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # the name as listed -> keyName
    problem: str | None = None


@dataclass
class Plan:
    """The listings of every target account, and what follows from them."""

    options: ApplyOptions
    policy: Policy
    listings: dict[str, Listing]
    aborted: str | None = None  # every account's API key was rejected
    stopped: str | None = None  # the run stopped while listing (the deadline)
    deletions: list[Step] = field(default_factory=list)
    done: frozenset[tuple[str, str]] | None = None  # what an earlier run did
    state: State | None = None
    done_unheld: int = 0  # secrets the earlier run did that the source does not hold

    def steps(self, targets: Iterable[Target]) -> Iterator[Step]:
        """One step per target, in order, then the deletions."""
        for target in targets:
            yield self.decide(target)
        yield from self.deletions

    def decide(self, target: Target) -> Step:
        """One secret's step. A target without its value does for every plan but one that
        keeps a ``state``, whose fingerprints need the value."""
        listing = self.listings.get(target.account)
        unreachable = (
            self.aborted
            or self.stopped
            or (listing.problem if listing else "the account was not listed")
        )
        if unreachable or listing is None:
            return Step.settled(target, Action.CREATE, Status.NOT_ATTEMPTED, unreachable)
        if self.done is not None and (target.account, target.secret_id) in self.done:
            reason = self.policy.reason(Why.DONE_EARLIER)
            return Step.settled(target, Action.SKIP, Status.SKIPPED, reason)
        key_name = listing.secrets.get(target.secret_id)
        fingerprint = None
        if self.state is not None:
            if not isinstance(target, SecretSpec):
                raise TypeError("a plan that keeps a state decides secrets with their values")
            fingerprint = self.state.fingerprint(target)
            if key_name == target.key_name and self.state.unchanged(target, fingerprint):
                reason = self.policy.reason(Why.UNCHANGED)
                return Step.settled(target, Action.SKIP, Status.SKIPPED, reason)
        if key_name is None:
            return Step(target, CREATE, fingerprint)
        settled = self.policy.when_exists()
        if settled is not None:
            action, outcome, reason = settled
            return Step.settled(target, action, outcome, reason)
        return Step(target, UPDATE, fingerprint)

    def creates(self, account: str, specs: Sequence[SecretSpec]) -> list[Step] | None:
        """The steps of specs of ``account`` when each is a plain create (the account is
        listed, holds none of them, and nothing else settles them), made in C; else None, and
        each is for :meth:`decide`. What a run of new secrets takes for each one."""
        listing = self.listings.get(account)
        if (
            listing is None
            or listing.problem
            or self.aborted
            or self.stopped
            or self.done is not None
            or self.state is not None
            or not listing.secrets.keys().isdisjoint(map(_SECRET_ID, specs))
        ):
            return None
        return list(map(Step, specs, itertools.repeat(CREATE)))

    @property
    def to_delete(self) -> list[Step]:
        """The deletions that will be sent (not those the plan settled)."""
        return [step for step in self.deletions if step.outcome is None]

    def plan_deletions(self, targets: Iterable[Target]) -> None:
        """With prune: every listed secret that no target names and no keep glob spares."""
        if not self.options.prune or self.aborted or self.stopped:
            return
        unnamed = self.unnamed(targets)
        self.deletions = [
            Step(target=target, action=Action.DELETE)
            if target.source == LISTED
            else Step.settled(target, Action.DELETE, Status.SKIPPED, NOT_DELETED)
            for target in unnamed
            if not self._kept(target.secret_id, target.key_name)
        ]

    def unnamed(self, targets: Iterable[Target]) -> list[Target]:
        """Every listed secret that no target names, account by account: those of valid ids,
        then those listed under names that are not valid ids."""
        named: dict[str, set[str]] = {}
        for target in targets:
            if target.account in self.listings:
                named.setdefault(target.account, set()).add(target.secret_id)
        return [
            Target(
                account=account,
                key_name=key_name,
                secret_id=secret_id,
                location=f"(in {account}, not in the manifests)",
                source=source,
            )
            for account, listing in sorted(self.listings.items())
            if not listing.problem
            for source, listed in ((LISTED, listing.secrets), (LISTED_INVALID, listing.invalid))
            for secret_id, key_name in sorted(listed.items())
            if source == LISTED_INVALID or secret_id not in named.get(account, ())
        ]

    def _kept(self, secret_id: str, key_name: str) -> bool:
        return any(
            fnmatch.fnmatchcase(secret_id, glob) or fnmatch.fnmatchcase(key_name, glob)
            for glob in self.options.keep
        )


async def list_accounts(
    api: Lister,
    accounts: Sequence[str],
    *,
    retry: RetryPolicy,
    rates: Rates,
    stops: Stops,
    plan: Plan,
    observer: Observer = QUIET,
) -> Plan:
    """List every account into ``plan``, ``concurrency`` at a time; what an error stops is
    for ``stops`` to say, and an account that cannot be listed stops there."""
    limiter = anyio.CapacityLimiter(plan.options.concurrency)
    gate = Gate(rates, stops, observer)

    async def list_one(account: str) -> None:
        async with limiter:
            plan.listings[account] = await list_account(api, account, retry=retry, gate=gate)

    async with anyio.create_task_group() as group:
        for account in accounts:
            group.start_soon(list_one, account)
    plan.aborted = stops.aborted
    return plan


async def list_account(api: Lister, account: str, *, retry: RetryPolicy, gate: Gate) -> Listing:
    """What one account holds, or why it cannot be listed (then the account stops there)."""
    stops = gate.stops
    blocked = stops.blocked(account)
    listing = Listing(problem=blocked) if blocked else await _listing(api, account, retry, gate)
    if listing.problem:
        stops.stop_account(account, listing.problem)
    return listing


async def _listing(api: Lister, account: str, retry: RetryPolicy, gate: Gate) -> Listing:
    """Every page of one account. The server is not trusted to end: a page token seen before,
    more than ``MAX_PAGES`` pages or ``MAX_LISTED`` secrets make the account unreachable."""
    listing = Listing()
    stops = gate.stops
    token = ""
    seen: set[str] = set()
    attempts = 0

    async def page_of(token: str) -> tuple[list[ExistingSecret], str]:
        nonlocal attempts
        attempts += 1
        return await gate.send(Sent("GET", account, "", attempts), api.list_page, account, token)

    try:
        for _ in range(MAX_PAGES):
            attempts = 0
            page, token = await retry.call(
                functools.partial(page_of, token),
                stopped=lambda: stops.blocked(account) is not None,
            )
            for secret in page:
                if secret.valid:
                    listing.secrets[secret.secret_id] = secret.key_name
                else:
                    listing.invalid[secret.secret_id] = secret.key_name
            if not token:
                return listing
            if token in seen:
                return Listing(problem=f"could not list account {account!r}: {REPEATED}")
            if len(listing.secrets) + len(listing.invalid) > MAX_LISTED:
                return Listing(problem=f"could not list account {account!r}: {TOO_MANY}")
            seen.add(token)
    except (errors.Unauthenticated, errors.PermissionDenied) as exc:
        return Listing(problem=stops.learn(account, exc))
    except errors.ApiError as exc:
        return Listing(problem=f"could not list account {account!r}: {stops.learn(account, exc)}")
    return Listing(problem=f"could not list account {account!r}: {TOO_MANY}")


@dataclass
class Drift:
    """How the accounts differ from the manifests, as far as names can tell."""

    missing: list[Target] = field(default_factory=list)  # named, not there
    renamed: list[tuple[Target, str]] = field(default_factory=list)  # there, other keyName
    unexpected: list[Target] = field(default_factory=list)  # there, not named
    unreachable: dict[str, str] = field(default_factory=dict)  # account -> why
    aborted: str | None = None  # the API key was rejected: nothing could be compared
    stopped: str | None = None  # the run stopped while listing (the deadline, a signal)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.renamed or self.unexpected or self.unreachable)


def drift(plan: Plan, targets: Callable[[], Iterable[Target]]) -> Drift:
    """Compare the listings with what the manifests name (values cannot be read back).

    ``targets`` is called twice: once to find what is missing, once what is unexpected.
    """
    found = Drift(unexpected=plan.unnamed(targets()), aborted=plan.aborted, stopped=plan.stopped)
    for account, listing in plan.listings.items():
        if listing.problem:
            found.unreachable[account] = listing.problem
    for target in targets():
        listed = plan.listings.get(target.account)
        if listed is None or listed.problem:
            continue
        actual = listed.secrets.get(target.secret_id)
        if actual is None:
            found.missing.append(target)
        elif actual != target.key_name:
            found.renamed.append((target, actual))
    return found
