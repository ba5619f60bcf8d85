"""The planner through its ``Lister`` Protocol: listing, deciding, pruning and drift, with a
scripted fake lister and a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio.lowlevel
import pytest

from bulk_secrets import errors
from bulk_secrets.models import (
    Action,
    Credentials,
    ExistingSecret,
    SecretSpec,
    SecretValue,
    Status,
    Step,
    Target,
)
from bulk_secrets.options import ApplyOptions, OnExisting, RetryOptions
from bulk_secrets.planner import Drift, Listing, Plan, drift, list_accounts
from bulk_secrets.policy import Hints, Policy, Stops, Why
from bulk_secrets.ratelimit import Rates
from bulk_secrets.retry import RetryPolicy
from bulk_secrets.state import State

pytestmark = pytest.mark.anyio

A = "acct-a"
B = "acct-b"
BACKOFF = 0.5  # backoff_initial == backoff_max: every retry waits up to this long (full jitter)
# One account listed at a time, so that the order of calls is the order of the accounts.
OPTIONS = ApplyOptions(
    concurrency=1,
    max_rps=0,
    retry=RetryOptions(retries=2, backoff_initial=BACKOFF, backoff_max=BACKOFF),
)
ABORTED = "the API key was rejected (401): invalid API key"
REFUSED_B = "account 'acct-b' refused the API key (403): denied"


def secret_id(key_name: str) -> str:
    return key_name.lower().replace("_", "-")


def spec(account: str, key_name: str, value: str = "value") -> SecretSpec:
    return SecretSpec(
        account=account,
        key_name=key_name,
        secret_id=secret_id(key_name),
        location=f"test:{key_name}",
        value=SecretValue(value),
    )


def unnamed(account: str, key_name: str, secret: str | None = None) -> Target:
    """A listed secret that no manifest names, as the planner describes it."""
    return Target(
        account=account,
        key_name=key_name,
        secret_id=secret or secret_id(key_name),
        location=f"(in {account}, not in the manifests)",
        source="listed",
    )


def listing(*key_names: str) -> Listing:
    return Listing({secret_id(k): k for k in key_names})


@dataclass
class FakeClock:
    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class FakeLister:
    """Serves each account's pages in order: tokens "", "page-2", "page-3", ..., then "".

    A scripted error for (account, token) is raised, once per entry, before that page is served.
    """

    def __init__(
        self,
        pages: Mapping[str, Sequence[Sequence[str]]],
        failures: Mapping[tuple[str, str], Sequence[Exception]] | None = None,
    ) -> None:
        self._pages = pages
        self._failures = {key: list(queue) for key, queue in (failures or {}).items()}
        self.calls: list[tuple[str, str]] = []

    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]:
        self.calls.append((account, page_token))
        queue = self._failures.get((account, page_token))
        if queue:
            raise queue.pop(0)
        pages = self._pages[account]
        index = int(page_token.removeprefix("page-")) - 1 if page_token else 0
        token = f"page-{index + 2}" if index + 1 < len(pages) else ""
        return [ExistingSecret(secret_id(k), k) for k in pages[index]], token


async def listed(
    lister: FakeLister, accounts: Sequence[str], options: ApplyOptions = OPTIONS
) -> tuple[Plan, FakeClock]:
    """A plan with every account listed through ``lister``, and the clock it waited on."""
    clock = FakeClock()
    plan = Plan(options, Policy(options.on_existing), {})
    await list_accounts(
        lister,
        accounts,
        retry=RetryPolicy(options.retry, sleep=clock.sleep),
        rates=Rates(options.max_rps, clock=clock, sleep=clock.sleep),
        stops=Stops(),
        plan=plan,
    )
    return plan, clock


def plan_of(
    listings: Mapping[str, Listing],
    *,
    on_existing: OnExisting = OnExisting.UPDATE,
    hints: Hints | None = None,
    done: Iterable[tuple[str, str]] | None = None,
    state: State | None = None,
    prune: bool = False,
    keep: tuple[str, ...] = (),
    aborted: str | None = None,
) -> Plan:
    """A plan over listings given outright."""
    options = ApplyOptions(on_existing=on_existing, prune=prune, keep=keep)
    return Plan(
        options,
        Policy(on_existing, hints),
        dict(listings),
        aborted=aborted,
        done=None if done is None else frozenset(done),
        state=state,
    )


# Listing


async def test_paging_follows_the_tokens_until_an_empty_one() -> None:
    lister = FakeLister({A: [["K1", "K2"], ["K3"], ["K4"]], B: [["K9"]]})
    plan, clock = await listed(lister, [A, B])
    assert lister.calls == [(A, ""), (A, "page-2"), (A, "page-3"), (B, "")]
    assert plan.listings == {A: listing("K1", "K2", "K3", "K4"), B: listing("K9")}
    assert plan.aborted is None
    assert clock.waits == []


async def test_a_401_while_listing_aborts_the_plan() -> None:
    lister = FakeLister(
        {A: [["K1"]], B: [["K2"]]},
        {(A, ""): [errors.Unauthenticated("invalid API key", status=401)]},
    )
    plan, _ = await listed(lister, [A, B])
    assert plan.aborted == ABORTED
    assert lister.calls == [(A, "")]  # B is not even listed, and says why
    assert plan.listings == {A: Listing(problem=ABORTED), B: Listing(problem=ABORTED)}
    specs = [spec(A, "K1"), spec(B, "K2"), spec(B, "K3")]
    assert list(plan.steps(specs)) == [
        Step(target=s, action=Action.CREATE, outcome=Status.NOT_ATTEMPTED, reason=ABORTED)
        for s in specs
    ]
    assert drift(plan, lambda: specs) == Drift(
        unreachable={A: ABORTED, B: ABORTED}, aborted=ABORTED
    )


async def test_a_403_makes_only_that_account_unreachable() -> None:
    lister = FakeLister(
        {A: [["K1"]], B: [["K2"]]},
        {(B, ""): [errors.PermissionDenied("denied", status=403)]},
    )
    plan, _ = await listed(lister, [A, B])
    assert plan.aborted is None
    assert plan.listings == {A: listing("K1"), B: Listing(problem=REFUSED_B)}
    assert lister.calls == [(A, ""), (B, "")]  # not retried
    in_a, missing_in_a, in_b = spec(A, "K1"), spec(A, "K5"), spec(B, "K2")
    assert list(plan.steps([in_a, missing_in_a, in_b])) == [
        Step(target=in_a, action=Action.UPDATE),
        Step(target=missing_in_a, action=Action.CREATE),
        Step(target=in_b, action=Action.CREATE, outcome=Status.NOT_ATTEMPTED, reason=REFUSED_B),
    ]


async def test_a_transient_error_while_listing_is_retried_on_the_same_page() -> None:
    lister = FakeLister(
        {A: [["K1"], ["K2"], ["K3"]]},
        {(A, "page-2"): [errors.ServerError("unavailable", status=503)]},
    )
    plan, clock = await listed(lister, [A])
    assert lister.calls == [(A, ""), (A, "page-2"), (A, "page-2"), (A, "page-3")]
    assert plan.listings == {A: listing("K1", "K2", "K3")}
    assert len(clock.waits) == 1 and 0 <= clock.waits[0] <= BACKOFF


@pytest.mark.parametrize(
    ("failures", "calls", "problem"),
    [
        (
            [errors.InvalidArgument("bad page token", status=400)],
            1,
            "could not list account 'acct-a': HTTP 400: bad page token",
        ),
        (
            [errors.ServerError("unavailable", status=503) for _ in range(3)],
            3,  # the first attempt and both retries
            "could not list account 'acct-a': HTTP 503: unavailable",
        ),
    ],
    ids=["permanent", "transient-exhausted"],
)
async def test_an_error_that_stays_names_the_account_in_the_listings_problem(
    failures: list[Exception], calls: int, problem: str
) -> None:
    lister = FakeLister({A: [["K1"]], B: [["K2"]]}, {(A, ""): failures})
    plan, clock = await listed(lister, [A, B])
    assert plan.listings == {A: Listing(problem=problem), B: listing("K2")}
    assert plan.aborted is None
    assert lister.calls == [(A, "")] * calls + [(B, "")]
    assert len(clock.waits) == calls - 1 and all(0 <= w <= BACKOFF for w in clock.waits)
    in_a = spec(A, "K1")
    assert plan.decide(in_a) == Step(
        target=in_a, action=Action.CREATE, outcome=Status.NOT_ATTEMPTED, reason=problem
    )


# Deciding


@pytest.mark.parametrize(
    ("on_existing", "action", "outcome", "reason"),
    [
        (OnExisting.UPDATE, Action.UPDATE, None, None),
        (OnExisting.SKIP, Action.SKIP, Status.SKIPPED, "already exists"),
        (OnExisting.FAIL, Action.UPDATE, Status.FAILED, "already exists"),
    ],
)
async def test_decide_creates_what_is_missing_and_applies_on_existing_to_the_rest(
    on_existing: OnExisting, action: Action, outcome: Status | None, reason: str | None
) -> None:
    plan = plan_of({A: listing("K1")}, on_existing=on_existing)
    there, missing = spec(A, "K1"), spec(A, "K2")
    assert plan.decide(missing) == Step(target=missing, action=Action.CREATE)
    assert plan.decide(there) == Step(target=there, action=action, outcome=outcome, reason=reason)


@pytest.mark.parametrize(
    ("case", "creates"),
    [
        ("new secrets", True),
        ("one of them listed", False),
        ("an earlier run's record", False),
        ("a state", False),
        ("a listing that failed", False),
        ("aborted", False),
        ("not listed", False),
    ],
)
async def test_creates_decides_a_run_of_new_secrets_in_one_go_and_nothing_else(
    tmp_path: Path, case: str, creates: bool
) -> None:
    """``creates`` gives the steps ``decide`` would, made at once, only where each is a plain
    create; in every other case it leaves them to ``decide``."""
    specs = [spec(A, "K1"), spec(A, "K2"), spec(A, "K3")]
    listings = {A: listing("OTHER")}
    options: dict[str, object] = {}
    if case == "one of them listed":
        listings = {A: listing("OTHER", "K2")}
    elif case == "an earlier run's record":
        options["done"] = [(B, "k1")]
    elif case == "a state":
        options["state"] = State(tmp_path / "s.json", Credentials(SecretValue("fw-test-key")))
    elif case == "a listing that failed":
        listings = {A: Listing(problem="the listing failed")}
    elif case == "aborted":
        options["aborted"] = ABORTED
    elif case == "not listed":
        listings = {}
    plan = plan_of(listings, **options)  # type: ignore[arg-type]
    made = plan.creates(A, specs)
    if creates:
        assert made == [plan.decide(s) for s in specs]
        assert {(step.action, step.outcome) for step in made} == {(Action.CREATE, None)}
    else:
        assert made is None


async def test_decide_skips_what_an_earlier_run_did() -> None:
    plan = plan_of({A: listing("K1", "K2")}, done=[(A, "k1"), (B, "k2")])
    done, again = spec(A, "K1"), spec(A, "K2")
    assert plan.decide(done) == Step(
        target=done, action=Action.SKIP, outcome=Status.SKIPPED, reason="done in the earlier run"
    )
    assert plan.decide(again) == Step(target=again, action=Action.UPDATE)


async def test_decide_skips_a_value_the_state_shows_unchanged(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json", Credentials(SecretValue("fw-test-api-key")))
    same, renamed, changed, deleted = (spec(A, k) for k in ("SAME", "RENAMED", "CHANGED", "GONE"))
    for written in (same, renamed, spec(A, "CHANGED", "old value"), deleted):
        state.settle(
            Step(target=written, action=Action.CREATE, fingerprint=state.fingerprint(written)),
            Status.SUCCEEDED,
        )
    # Someone renamed one secret's keyName and deleted another, outside bulk-secrets.
    listed_a = Listing({"same": "SAME", "renamed": "Renamed", "changed": "CHANGED"})
    plan = plan_of({A: listed_a}, state=state)
    assert plan.decide(same) == Step(
        target=same,
        action=Action.SKIP,
        outcome=Status.SKIPPED,
        reason="unchanged since the last run",
    )
    assert plan.decide(renamed) == Step(
        target=renamed, action=Action.UPDATE, fingerprint=state.fingerprint(renamed)
    )
    assert plan.decide(changed) == Step(
        target=changed, action=Action.UPDATE, fingerprint=state.fingerprint(changed)
    )
    assert plan.decide(deleted) == Step(
        target=deleted, action=Action.CREATE, fingerprint=state.fingerprint(deleted)
    )


async def test_hints_appear_in_the_reasons(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json", Credentials(SecretValue("fw-test-api-key")))
    unchanged = spec(A, "UNCHANGED")
    state.settle(
        Step(target=unchanged, action=Action.CREATE, fingerprint=state.fingerprint(unchanged)),
        Status.SUCCEEDED,
    )
    hints = {
        Why.EXISTS: "--on-existing skip",
        Why.DONE_EARLIER: "--only-failed",
        Why.UNCHANGED: "--state",
    }
    plan = plan_of(
        {A: listing("EXISTS", "DONE", "UNCHANGED")},
        on_existing=OnExisting.SKIP,
        hints=hints,
        done=[(A, "done")],
        state=state,
    )
    reasons = [plan.decide(spec(A, k)).reason for k in ("EXISTS", "DONE", "UNCHANGED")]
    assert reasons == [
        "already exists (--on-existing skip)",
        "done in the earlier run (--only-failed)",
        "unchanged since the last run (--state)",
    ]


async def test_a_secret_of_an_account_not_listed_is_not_attempted() -> None:
    elsewhere = spec(B, "K1")
    assert plan_of({A: listing("K1")}).decide(elsewhere) == Step(
        target=elsewhere,
        action=Action.CREATE,
        outcome=Status.NOT_ATTEMPTED,
        reason="the account was not listed",
    )


# Pruning


async def test_prune_deletes_what_no_manifest_names_except_what_keep_spares() -> None:
    plan = plan_of(
        {
            A: listing("APP_KEY", "OLD_KEY", "KEEP_ME", "LEGACY_TOKEN", "ZZ_TOP"),
            B: Listing(problem=REFUSED_B),
        },
        prune=True,
        keep=("keep-*", "LEGACY_*"),  # the first matches an id, the second a keyName
    )
    targets = [spec(A, "APP_KEY"), spec(B, "OTHER")]
    plan.plan_deletions(targets)
    assert plan.deletions == [
        Step(target=unnamed(A, "OLD_KEY"), action=Action.DELETE),
        Step(target=unnamed(A, "ZZ_TOP"), action=Action.DELETE),
    ]
    assert list(plan.steps(targets)) == [
        Step(target=targets[0], action=Action.UPDATE),
        Step(
            target=targets[1], action=Action.CREATE, outcome=Status.NOT_ATTEMPTED, reason=REFUSED_B
        ),
        *plan.deletions,
    ]


@pytest.mark.parametrize(
    ("prune", "aborted"), [(False, None), (True, ABORTED)], ids=["prune-off", "aborted"]
)
async def test_nothing_is_deleted_without_prune_or_after_an_abort(
    prune: bool, aborted: str | None
) -> None:
    plan = plan_of({A: listing("APP_KEY", "OLD_KEY")}, prune=prune, aborted=aborted)
    targets = [spec(A, "APP_KEY")]
    plan.plan_deletions(targets)
    assert plan.deletions == []
    assert [s.action for s in plan.steps(targets)] == [Action.CREATE if aborted else Action.UPDATE]


# Drift


async def test_drift_names_what_is_missing_renamed_unexpected_and_unreachable() -> None:
    plan = plan_of(
        {
            A: Listing({"app-key": "APP_KEY", "db-url": "Db_Url", "stray": "STRAY"}),
            B: Listing(problem=REFUSED_B),
        }
    )
    fine, renamed, missing = spec(A, "APP_KEY"), spec(A, "DB_URL"), spec(A, "NEW_ONE")
    targets = [fine, renamed, missing, spec(B, "ANY")]
    found = drift(plan, lambda: iter(targets))  # a fresh iterator each call
    assert found == Drift(
        missing=[missing],
        renamed=[(renamed, "Db_Url")],
        unexpected=[unnamed(A, "STRAY")],
        unreachable={B: REFUSED_B},
        aborted=None,
    )
    assert not found.clean


async def test_no_drift_is_clean() -> None:
    plan = plan_of({A: listing("APP_KEY"), B: listing()})
    found = drift(plan, lambda: [spec(A, "APP_KEY")])
    assert found == Drift()
    assert found.clean
