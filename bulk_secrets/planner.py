"""Plan: list what each target account holds, then decide one action per secret.

Each account is listed once, all pages, before anything is written. A secret that is not there
is created; one that is there is updated, skipped or failed as ``on_existing`` says (or skipped
when ``--state`` shows its value unchanged). With ``prune``, every listed secret that no
manifest names, and that no ``keep`` glob spares, is deleted, after all the writes. Races with
other writers still converge at execution: a 409 on create becomes an update, a 404 on update
becomes a create.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from . import errors
from .models import Action, Aimed, ExistingSecret, SecretSpec, Status, Step
from .options import ApplyOptions, OnExisting
from .ratelimit import Rates
from .retry import RetryPolicy
from .state import State

DONE_EARLIER = "done in the earlier run (--only-failed)"
UNCHANGED = "unchanged since the last run (--state)"


class Lister(Protocol):
    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]: ...


Target = Aimed  # a secret aimed at an account, without its value


@dataclass
class Listing:
    """What one account holds (id -> keyName), or why it could not be listed."""

    secrets: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class Plan:
    """The listings of every target account, and what follows from them."""

    options: ApplyOptions
    listings: dict[str, Listing]
    aborted: str | None = None
    deletions: list[Step] = field(default_factory=list)
    done: frozenset[tuple[str, str]] | None = None  # --only-failed: what an earlier run did
    state: State | None = None

    def steps(self, specs: Iterable[SecretSpec]) -> Iterator[Step]:
        """One step per spec, in order, then the deletions."""
        for spec in specs:
            yield self.decide(spec)
        yield from self.deletions

    def decide(self, spec: SecretSpec) -> Step:
        listing = self.listings.get(spec.account)
        unreachable = self.aborted or (listing.problem if listing else "the account was not listed")
        if unreachable or listing is None:
            return Step.of(spec, Action.CREATE, outcome=Status.NOT_ATTEMPTED, reason=unreachable)
        if self.done is not None and (spec.account, spec.secret_id) in self.done:
            return Step.of(spec, Action.SKIP, outcome=Status.SKIPPED, reason=DONE_EARLIER)
        key_name = listing.secrets.get(spec.secret_id)
        fingerprint = None
        if self.state is not None:
            fingerprint = self.state.fingerprint(spec)
            if key_name == spec.key_name and self.state.unchanged(spec, fingerprint):
                return Step.of(spec, Action.SKIP, outcome=Status.SKIPPED, reason=UNCHANGED)
        if key_name is None:
            return Step.of(spec, Action.CREATE, fingerprint=fingerprint)
        if self.options.on_existing is OnExisting.SKIP:
            reason = "already exists (--on-existing skip)"
            return Step.of(spec, Action.SKIP, outcome=Status.SKIPPED, reason=reason)
        if self.options.on_existing is OnExisting.FAIL:
            reason = "already exists (--on-existing fail)"
            return Step.of(spec, Action.UPDATE, outcome=Status.FAILED, reason=reason)
        return Step.of(spec, Action.UPDATE, fingerprint=fingerprint)

    def plan_deletions(self, targets: Iterable[Target]) -> None:
        """With prune: every listed secret that no target names and no keep glob spares."""
        if not self.options.prune or self.aborted:
            return
        self.deletions = [
            step for step in self.unnamed(targets) if not self._kept(step.secret_id, step.key_name)
        ]

    def unnamed(self, targets: Iterable[Target]) -> list[Step]:
        """Every listed secret that no target names, as a deletion, account by account."""
        named: dict[str, set[str]] = {}
        for target in targets:
            if target.account in self.listings:
                named.setdefault(target.account, set()).add(target.secret_id)
        return [
            Step(
                account=account,
                key_name=key_name,
                secret_id=secret_id,
                location=f"(in {account}, not in the manifests)",
                action=Action.DELETE,
            )
            for account, listing in sorted(self.listings.items())
            if not listing.problem
            for secret_id, key_name in sorted(listing.secrets.items())
            if secret_id not in named.get(account, ())
        ]

    def _kept(self, secret_id: str, key_name: str) -> bool:
        return any(
            fnmatch.fnmatchcase(secret_id, glob) or fnmatch.fnmatchcase(key_name, glob)
            for glob in self.options.keep
        )


async def list_accounts(
    api: Lister, accounts: Sequence[str], retry: RetryPolicy, rates: Rates, options: ApplyOptions
) -> Plan:
    """List every account, ``concurrency`` at a time; a 401 stops, a 403 marks that account."""
    plan = Plan(options, {})
    limiter = anyio.CapacityLimiter(options.concurrency)

    async def list_one(account: str) -> None:
        async with limiter:
            if plan.aborted:
                return
            plan.listings[account] = await _listing(api, account, retry, rates, plan)

    async with anyio.create_task_group() as group:
        for account in accounts:
            group.start_soon(list_one, account)
    return plan


async def _listing(
    api: Lister, account: str, retry: RetryPolicy, rates: Rates, plan: Plan
) -> Listing:
    listing = Listing()
    token = ""
    try:
        while True:
            page, token = await retry.call(
                functools.partial(rates.call, account, api.list_page, account, token),
                stopped=lambda: plan.aborted is not None,
            )
            listing.secrets.update((s.secret_id, s.key_name) for s in page)
            if not token:
                return listing
    except errors.Unauthenticated as exc:
        plan.aborted = plan.aborted or f"the API key was rejected (401): {exc.message}"
        return Listing(problem=plan.aborted)
    except errors.PermissionDenied as exc:
        return Listing(problem=f"account {account!r} refused the API key (403): {exc.message}")
    except errors.ApiError as exc:
        return Listing(problem=f"could not list account {account!r}: {exc}")


@dataclass
class Drift:
    """How the accounts differ from the manifests, as far as names can tell."""

    missing: list[Step] = field(default_factory=list)  # named, not there
    renamed: list[tuple[Step, str]] = field(default_factory=list)  # there, other keyName
    unexpected: list[Step] = field(default_factory=list)  # there, not named
    unreachable: dict[str, str] = field(default_factory=dict)  # account -> why

    @property
    def clean(self) -> bool:
        return not (self.missing or self.renamed or self.unexpected or self.unreachable)


def drift(plan: Plan, targets: Callable[[], Iterable[Target]]) -> Drift:
    """Compare the listings with what the manifests name (values cannot be read back).

    ``targets`` is called twice: once to find what is missing, once what is unexpected.
    """
    found = Drift(unexpected=plan.unnamed(targets()))
    for account, listing in plan.listings.items():
        if listing.problem:
            found.unreachable[account] = listing.problem
    for target in targets():
        listed = plan.listings.get(target.account)
        if listed is None or listed.problem:
            continue
        step = Step(
            account=target.account,
            key_name=target.key_name,
            secret_id=target.secret_id,
            location=target.location,
            action=Action.CREATE,
        )
        actual = listed.secrets.get(target.secret_id)
        if actual is None:
            found.missing.append(step)
        elif actual != target.key_name:
            found.renamed.append((step, actual))
    return found
