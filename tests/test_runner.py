"""The runner through its ``SecretsApi`` Protocol: a scripted fake API, a fake clock, no sockets.

Each test asserts the exact results and the exact calls the fake saw. Every run also checks
that each step ended as exactly one result (see :meth:`Rig.execute`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from bulk_secrets import errors
from bulk_secrets.models import (
    Action,
    Credentials,
    ExistingSecret,
    Result,
    SecretSpec,
    SecretValue,
    Status,
    Step,
    Target,
)
from bulk_secrets.options import ApplyOptions, OnExisting, RetryOptions
from bulk_secrets.planner import Listing, Plan
from bulk_secrets.policy import Policy, Stops, Why
from bulk_secrets.ratelimit import Rates
from bulk_secrets.report import ReportSink, Summary
from bulk_secrets.retry import RetryPolicy
from bulk_secrets.runner import CONTESTED, INTERRUPTED, MAX_TURNS, Runner
from bulk_secrets.state import State

pytestmark = pytest.mark.anyio

A = "acct-a"
B = "acct-b"
CREATED, UPDATED, DELETED = 201, 200, 204  # the fake's successes: distinct, to tell them apart
BACKOFF = 0.5  # backoff_initial == backoff_max: every retry waits up to this long (full jitter)
CREDENTIALS = Credentials(SecretValue("fw-test-api-key"))
BUG = "internal error (RuntimeError): the run was stopped"

Call = tuple[str, str, str]  # (method, account, secret id)


def spec(account: str, key_name: str, value: str = "value") -> SecretSpec:
    return SecretSpec(
        account=account,
        key_name=key_name,
        secret_id=key_name.lower().replace("_", "-"),
        location=f"test:{key_name}",
        value=SecretValue(value),
    )


def step(account: str, key_name: str, action: Action = Action.CREATE) -> Step:
    return Step(target=spec(account, key_name), action=action)


def call(method: str, account: str, key_name: str) -> Call:
    return (method, account, key_name.lower().replace("_", "-"))


@dataclass
class FakeClock:
    """The rates' clock and every sleep: a sleep records its wait and moves time on."""

    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class FakeApi:
    """Answers each call with its next scripted reply (an exception is raised), else success.

    Records every call and the peak of calls in flight; ``turns`` event-loop turns pass inside
    each call, and with ``hold`` each call waits for that event.
    """

    def __init__(
        self,
        replies: Mapping[Call, Sequence[int | Exception]] | None = None,
        *,
        turns: int = 0,
        hold: anyio.Event | None = None,
        listed: Mapping[str, Sequence[str] | Exception] | None = None,
        list_holds: Mapping[str, anyio.Event] | None = None,
    ) -> None:
        self._replies = {key: list(queue) for key, queue in (replies or {}).items()}
        self._listed = dict(listed or {})  # account -> the secret ids it holds, or its error
        self._list_holds = dict(list_holds or {})
        self._turns = turns
        self._hold = hold
        self.calls: list[Call] = []
        self.in_flight = 0
        self.peak = 0
        self.entered = anyio.Event()
        self.listing = anyio.Event()

    async def create(self, spec: SecretSpec) -> int:
        return await self._answer(("create", spec.account, spec.secret_id), CREATED)

    async def update(self, spec: SecretSpec) -> int:
        return await self._answer(("update", spec.account, spec.secret_id), UPDATED)

    async def delete(self, account: str, secret_id: str) -> int:
        return await self._answer(("delete", account, secret_id), DELETED)

    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]:
        """One page: every secret ``listed`` names (none if it names none of the account)."""
        self.calls.append(("list", account, ""))
        self.listing.set()
        hold = self._list_holds.get(account)
        if hold is not None:
            await hold.wait()
        held = self._listed.get(account, ())
        if isinstance(held, Exception):
            raise held
        return [ExistingSecret(secret_id, secret_id.upper()) for secret_id in held], ""

    async def _answer(self, key: Call, success: int) -> int:
        self.calls.append(key)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.entered.set()
        try:
            for _ in range(self._turns):
                await anyio.lowlevel.checkpoint()
            if self._hold is not None:
                await self._hold.wait()
        finally:
            self.in_flight -= 1
        queue = self._replies.get(key)
        reply = queue.pop(0) if queue else success
        if isinstance(reply, Exception):
            raise reply
        return reply


class Collected(ReportSink):
    def __init__(self) -> None:
        self.results: list[Result] = []

    def write(self, result: Result) -> None:
        self.results.append(result)


class Rig:
    """A runner over ``api`` with a fake clock (no rate cap unless asked) and fast retries."""

    def __init__(
        self,
        api: FakeApi,
        *,
        workers: int = 1,
        policy: Policy | None = None,
        retries: int = 2,
        max_rps: float = 0,
        state: State | None = None,
    ) -> None:
        self.api = api
        self.clock = FakeClock()
        self.stops = Stops()
        self.summary = Summary()
        self.sink = Collected()
        self.plan = Plan(ApplyOptions(), policy or Policy(OnExisting.UPDATE), {})
        options = RetryOptions(retries=retries, backoff_initial=BACKOFF, backoff_max=BACKOFF)
        self.runner = Runner(
            api,
            workers=workers,
            policy=policy or Policy(OnExisting.UPDATE),
            stops=self.stops,
            retry=RetryPolicy(options, sleep=self.clock.sleep),
            rates=Rates(max_rps, clock=self.clock, sleep=self.clock.sleep),
            sink=self.sink,
            summary=self.summary,
            state=state,
        )

    async def execute(self, steps: Sequence[Step]) -> dict[tuple[str, str], Result]:
        await self.runner.execute(steps)
        return self.by_secret(steps)

    async def apply(
        self, specs: Sequence[SecretSpec], *, expected: bool = True
    ) -> dict[tuple[str, str], Result]:
        """Carry out specs as a run does: each decided once its account is listed."""
        await self.runner.execute(
            specs,
            plan=self.plan,
            expected=Counter(s.account for s in specs) if expected else None,
        )
        return self.by_secret([Step(target=s, action=Action.CREATE) for s in specs])

    def by_secret(self, steps: Sequence[Step]) -> dict[tuple[str, str], Result]:
        """The results by (account, secret id), after checking each step ended as one."""
        names = [(r.account, r.secret_id) for r in self.sink.results]
        assert sorted(names) == sorted((s.target.account, s.target.secret_id) for s in steps)
        assert self.summary.total == len(steps)
        return dict(zip(names, self.sink.results, strict=True))


# Converging with other writers


async def test_a_404_on_update_becomes_a_create() -> None:
    api = FakeApi({call("update", A, "K1"): [errors.NotFound("no such secret", status=404)]})
    wanted = step(A, "K1", Action.UPDATE)
    results = await Rig(api).execute([wanted])
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.CREATE,
            status=Status.SUCCEEDED,
            http_status=CREATED,
            attempts=2,
        )
    }
    assert api.calls == [call("update", A, "K1"), call("create", A, "K1")]


async def test_a_409_on_create_becomes_an_update_under_on_existing_update() -> None:
    api = FakeApi({call("create", A, "K1"): [errors.AlreadyExists("exists", status=409)]})
    wanted = step(A, "K1")
    results = await Rig(api, policy=Policy(OnExisting.UPDATE)).execute([wanted])
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.UPDATE,
            status=Status.SUCCEEDED,
            http_status=UPDATED,
            attempts=2,
        )
    }
    assert api.calls == [call("create", A, "K1"), call("update", A, "K1")]


@pytest.mark.parametrize(
    ("on_existing", "status"),
    [(OnExisting.SKIP, Status.SKIPPED), (OnExisting.FAIL, Status.FAILED)],
)
async def test_a_409_on_create_is_settled_by_policy_in_the_planners_words(
    on_existing: OnExisting, status: Status
) -> None:
    policy = Policy(on_existing, {Why.EXISTS: f"--on-existing {on_existing}"})
    api = FakeApi({call("create", A, "K1"): [errors.AlreadyExists("exists", status=409)]})
    wanted = step(A, "K1")
    results = await Rig(api, policy=policy).execute([wanted])
    reason = f"already exists (--on-existing {on_existing})"
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.SKIP if status is Status.SKIPPED else Action.UPDATE,  # as planned
            status=status,
            http_status=409,
            attempts=1,
            error=reason,
        )
    }
    assert api.calls == [call("create", A, "K1")]  # no update
    # The planner, finding the same secret listed, gives the same outcome and words.
    plan = Plan(ApplyOptions(on_existing=on_existing), policy, {A: Listing({"k1": "K1"})})
    planned = plan.decide(spec(A, "K1"))
    assert (planned.action, planned.outcome, planned.reason) == (
        results[(A, "k1")].action,
        status,
        reason,
    )


async def test_a_secret_created_and_deleted_by_others_stops_after_max_turns() -> None:
    api = FakeApi(
        {
            call("create", A, "K1"): [errors.AlreadyExists("exists", status=409)] * MAX_TURNS,
            call("update", A, "K1"): [errors.NotFound("gone", status=404)] * MAX_TURNS,
        }
    )
    wanted = step(A, "K1")
    results = await Rig(api).execute([wanted])
    assert MAX_TURNS == 4
    assert api.calls == [call("create", A, "K1"), call("update", A, "K1")] * 2
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.UPDATE,  # the last turn sent
            status=Status.FAILED,
            http_status=404,
            attempts=MAX_TURNS,
            error=CONTESTED,
        )
    }


async def test_a_delete_that_meets_404_succeeds() -> None:
    gone = Target(account=A, key_name="OLD", secret_id="old", location="(listed)")
    api = FakeApi({("delete", A, "old"): [errors.NotFound("no such secret", status=404)]})
    results = await Rig(api).execute([Step(target=gone, action=Action.DELETE)])
    assert results == {
        (A, "old"): Result.of(
            gone, action=Action.DELETE, status=Status.SUCCEEDED, http_status=404, attempts=1
        )
    }
    assert api.calls == [("delete", A, "old")]


# What an error stops


async def test_a_403_stops_its_account_only() -> None:
    refused = "account 'acct-a' refused the API key (403): no access to this account"
    api = FakeApi(
        {
            call("create", A, "K2"): [
                errors.PermissionDenied("no access to this account", status=403)
            ]
        }
    )
    steps = [step(A, "K1"), step(B, "K1"), step(A, "K2"), step(B, "K2"), step(A, "K3")]
    rig = Rig(api)  # one worker: A's third secret comes after its second has failed
    results = await rig.execute(steps)
    assert results[(A, "k1")].status is Status.SUCCEEDED
    assert results[(A, "k2")] == Result.of(
        steps[2].target,
        action=Action.CREATE,
        status=Status.FAILED,
        http_status=403,
        attempts=1,
        error=refused,
    )
    assert results[(A, "k3")] == Result.of(
        steps[4].target, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=refused
    )
    assert results[(B, "k1")].status is results[(B, "k2")].status is Status.SUCCEEDED
    assert sorted(api.calls) == sorted(
        call("create", account, key) for account in (A, B) for key in ("K1", "K2")
    )
    assert (rig.stops.aborted, rig.stops.stopped) == (None, None)


async def test_a_401_stops_every_account_and_lets_requests_in_flight_finish() -> None:
    aborted = "the API key was rejected (401): invalid API key"
    api = FakeApi(
        {call("create", A, "K1"): [errors.Unauthenticated("invalid API key", status=401)]},
        turns=1,
    )
    steps = [step(A, "K1"), step(A, "K2"), step(B, "K1"), step(B, "K2")]
    rig = Rig(api, workers=2)
    results = await rig.execute(steps)
    assert rig.stops.aborted == aborted
    assert results[(A, "k1")] == Result.of(
        steps[0].target,
        action=Action.CREATE,
        status=Status.FAILED,
        http_status=401,
        attempts=1,
        error=aborted,
    )
    assert results[(B, "k1")].status is Status.SUCCEEDED  # was in flight: finished
    for untouched in (steps[1], steps[3]):
        target = untouched.target
        assert results[(target.account, target.secret_id)] == Result.of(
            target, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=aborted
        )
    assert sorted(api.calls) == [call("create", A, "K1"), call("create", B, "K1")]
    assert rig.summary.by_status == Counter(succeeded=1, failed=1, not_attempted=2)


async def test_a_bug_fails_its_secret_stops_the_run_and_leaves_the_rest() -> None:
    api = FakeApi({call("create", A, "K2"): [RuntimeError("boom near value sk-canary-1234")]})
    steps = [step(A, "K1"), step(A, "K2"), step(A, "K3"), step(B, "K1"), step(B, "K2")]
    rig = Rig(api)
    results = await rig.execute(steps)  # returns: the bug is a result, not an exception
    assert rig.stops.stopped == BUG
    assert rig.stops.aborted is None
    assert {results[(A, "k1")].status, results[(B, "k1")].status} == {Status.SUCCEEDED}
    assert results[(A, "k2")] == Result.of(
        steps[1].target, action=Action.CREATE, status=Status.FAILED, attempts=1, error=BUG
    )
    for rest in (steps[2], steps[4]):  # the other account too: the run stopped
        target = rest.target
        assert results[(target.account, target.secret_id)] == Result.of(
            target, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=BUG
        )
    # The accounts take turns: A, B, then A's bug.
    assert api.calls == [call("create", A, "K1"), call("create", B, "K1"), call("create", A, "K2")]
    assert all("sk-canary" not in (r.error or "") for r in results.values())


async def test_bugs_in_several_workers_at_once_never_escape_as_an_exception_group() -> None:
    steps = [step(A, f"K{i}") for i in range(8)]
    api = FakeApi({call("create", A, f"K{i}"): [RuntimeError("boom")] for i in range(8)}, turns=2)
    results = await Rig(api, workers=3).execute(steps)
    assert api.calls == [call("create", A, f"K{i}") for i in range(3)]
    assert Counter((r.status, r.attempts, r.error) for r in results.values()) == Counter(
        {(Status.FAILED, 1, BUG): 3, (Status.NOT_ATTEMPTED, 0, BUG): 5}
    )
    assert {results[(A, f"k{i}")].status for i in range(3)} == {Status.FAILED}


async def test_a_write_step_without_a_value_is_a_bug() -> None:
    nameless = Target(account=A, key_name="K1", secret_id="k1", location="test:K1")
    rig = Rig(FakeApi())
    results = await rig.execute([Step(target=nameless, action=Action.CREATE)])
    reason = "internal error (ValueError): the run was stopped"
    assert results == {
        (A, "k1"): Result.of(nameless, action=Action.CREATE, status=Status.FAILED, error=reason)
    }
    assert rig.api.calls == []
    assert rig.stops.stopped == reason


async def test_a_cancelled_run_reports_the_step_in_flight_and_the_rest() -> None:
    api = FakeApi(hold=anyio.Event())  # never set: the call hangs until cancelled
    steps = [step(A, "K1"), step(A, "K2")]
    rig = Rig(api)
    async with anyio.create_task_group() as group:
        group.start_soon(rig.runner.execute, steps)
        await api.entered.wait()
        group.cancel_scope.cancel()
    results = rig.by_secret(steps)
    assert results == {
        (A, "k1"): Result.of(
            steps[0].target,
            action=Action.CREATE,
            status=Status.FAILED,
            attempts=1,
            error=INTERRUPTED,
        ),
        (A, "k2"): Result.of(
            steps[1].target,
            action=Action.CREATE,
            status=Status.NOT_ATTEMPTED,
            error="the run was interrupted",
        ),
    }
    assert api.calls == [call("create", A, "K1")]


# Retries


async def test_a_request_timeout_is_retried_then_fails_with_its_message() -> None:
    message = "PATCH got no answer within 30s"
    api = FakeApi({call("update", A, "K1"): [errors.RequestTimeout(message) for _ in range(3)]})
    wanted = step(A, "K1", Action.UPDATE)
    rig = Rig(api, retries=2)
    results = await rig.execute([wanted])
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.UPDATE,
            status=Status.FAILED,
            http_status=None,
            attempts=3,
            error=message,
        )
    }
    assert api.calls == [call("update", A, "K1")] * 3
    assert len(rig.clock.waits) == 2 and all(0 <= w <= BACKOFF for w in rig.clock.waits)


async def test_a_transient_failure_then_success_counts_both_attempts() -> None:
    api = FakeApi({call("create", A, "K1"): [errors.ServerError("unavailable", status=503)]})
    wanted = step(A, "K1")
    rig = Rig(api, retries=2)
    results = await rig.execute([wanted])
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.CREATE,
            status=Status.SUCCEEDED,
            http_status=CREATED,
            attempts=2,
        )
    }
    assert api.calls == [call("create", A, "K1")] * 2
    assert len(rig.clock.waits) == 1 and 0 <= rig.clock.waits[0] <= BACKOFF


async def test_with_no_retries_a_transient_failure_fails_at_once() -> None:
    api = FakeApi({call("create", A, "K1"): [errors.ServerError("unavailable", status=503)]})
    wanted = step(A, "K1")
    rig = Rig(api, retries=0)
    results = await rig.execute([wanted])
    assert results == {
        (A, "k1"): Result.of(
            wanted.target,
            action=Action.CREATE,
            status=Status.FAILED,
            http_status=503,
            attempts=1,
            error="HTTP 503: unavailable",
        )
    }
    assert api.calls == [call("create", A, "K1")]
    assert rig.clock.waits == []


async def test_a_retry_cut_short_by_a_403_gives_the_refusal_as_its_reason() -> None:
    refused = "account 'acct-a' refused the API key (403): denied"
    api = FakeApi(
        {
            call("create", A, "K1"): [errors.ServerError("unavailable", status=503)],
            call("create", A, "K2"): [errors.PermissionDenied("denied", status=403)],
        }
    )
    steps = [step(A, "K1"), step(A, "K2")]
    rig = Rig(api, workers=2)  # K2 meets the 403 while K1 waits for its retry
    results = await rig.execute(steps)
    assert api.calls == [call("create", A, "K1"), call("create", A, "K2")]  # no retry sent
    assert results[(A, "k2")].error == refused
    assert (results[(A, "k1")].status, results[(A, "k1")].attempts) == (Status.FAILED, 1)
    assert rig.stops.stopped is None  # the run was not stopped ...
    assert results[(A, "k1")].error == refused  # ... yet K1 says it was


# The plan's own decisions, the pool, the pace


async def test_steps_settled_by_the_plan_make_no_call_and_leave_the_state(
    tmp_path: Path,
) -> None:
    state = State(tmp_path / "state.json", CREDENTIALS)
    settled = [
        Step(
            target=spec(A, "K1"),
            action=Action.SKIP,
            outcome=Status.SKIPPED,
            reason="unchanged since the last run",
        ),
        Step(
            target=spec(A, "K2"),
            action=Action.UPDATE,
            outcome=Status.FAILED,
            reason="already exists",
        ),
        Step(
            target=spec(B, "K3"),
            action=Action.CREATE,
            outcome=Status.NOT_ATTEMPTED,
            reason="account 'acct-b' refused the API key (403): denied",
        ),
    ]
    for s in settled:  # as if each had been written before
        state.settle(_written(state, s.target, Action.CREATE), Status.SUCCEEDED)
    rig = Rig(FakeApi(), state=state)
    results = await rig.execute(settled)
    assert rig.api.calls == []
    expected = []
    for s in settled:
        assert s.outcome is not None
        expected.append(Result.of(s.target, action=s.action, status=s.outcome, error=s.reason))
    assert list(results.values()) == expected
    for s in settled:  # a failure settled by the plan sent nothing: the fingerprint stays
        assert isinstance(s.target, SecretSpec)
        assert state.unchanged(s.target, state.fingerprint(s.target))


async def test_every_step_ends_as_exactly_one_result() -> None:
    listed = Target(account=A, key_name="OLD", secret_id="old", location="(listed)")
    vanished = Target(account=B, key_name="GONE", secret_id="gone", location="(listed)")
    steps = [
        step(A, "K1"),
        step(A, "K2", Action.UPDATE),
        step(A, "K3"),
        Step(target=listed, action=Action.DELETE),
        Step(target=spec(A, "K4"), action=Action.SKIP, outcome=Status.SKIPPED, reason="done"),
        step(B, "K1"),
        step(B, "K2"),
        Step(target=vanished, action=Action.DELETE),
    ]
    api = FakeApi(
        {
            call("update", A, "K2"): [errors.NotFound("gone", status=404)],
            call("create", A, "K3"): [errors.AlreadyExists("exists", status=409)],
            call("create", B, "K1"): [errors.ConnectionFailed("reset by peer")],
            call("create", B, "K2"): [errors.InvalidArgument("bad keyName", status=400)],
            ("delete", B, "gone"): [errors.NotFound("gone", status=404)],
        },
        turns=1,
    )
    rig = Rig(api, workers=4)
    results = await rig.execute(steps)
    outcomes = {
        name: (r.status, r.action, r.http_status, r.attempts) for name, r in results.items()
    }
    assert outcomes == {
        (A, "k1"): (Status.SUCCEEDED, Action.CREATE, CREATED, 1),
        (A, "k2"): (Status.SUCCEEDED, Action.CREATE, CREATED, 2),
        (A, "k3"): (Status.SUCCEEDED, Action.UPDATE, UPDATED, 2),
        (A, "old"): (Status.SUCCEEDED, Action.DELETE, DELETED, 1),
        (A, "k4"): (Status.SKIPPED, Action.SKIP, None, 0),
        (B, "k1"): (Status.SUCCEEDED, Action.CREATE, CREATED, 2),
        (B, "k2"): (Status.FAILED, Action.CREATE, 400, 1),
        (B, "gone"): (Status.SUCCEEDED, Action.DELETE, 404, 1),
    }
    assert results[(B, "k2")].error == "HTTP 400: bad keyName"
    assert Counter(api.calls) == Counter(
        [call("create", A, "K1"), call("update", A, "K2"), call("create", A, "K2")]
        + [call("create", A, "K3"), call("update", A, "K3"), ("delete", A, "old")]
        + [call("create", B, "K1")] * 2
        + [call("create", B, "K2"), ("delete", B, "gone")]
    )
    assert rig.summary.by_status == Counter(succeeded=6, failed=1, skipped=1)


@pytest.mark.parametrize("workers", [1, 3])
async def test_the_worker_count_bounds_the_calls_in_flight(workers: int) -> None:
    steps = [step(A if i % 2 else B, f"K{i}") for i in range(10)]
    api = FakeApi(turns=3)
    results = await Rig(api, workers=workers).execute(steps)
    assert api.peak == workers
    assert {r.status for r in results.values()} == {Status.SUCCEEDED}
    assert sorted(api.calls) == sorted(
        call("create", s.target.account, s.target.key_name) for s in steps
    )


async def test_a_rate_cap_makes_each_write_wait_its_turn_on_the_clock() -> None:
    steps = [step(A, f"K{i}") for i in range(3)]
    rig = Rig(FakeApi(), workers=2, max_rps=2)
    results = await rig.execute(steps)
    assert {r.status for r in results.values()} == {Status.SUCCEEDED}
    assert rig.clock.waits == [0.5, 0.5]  # 2 per second: half a second apart
    assert rig.api.calls == [call("create", A, f"K{i}") for i in range(3)]


# State


def _written(state: State, target: Target, action: Action) -> Step:
    """A write step carrying its value's fingerprint, as the planner makes it with --state."""
    assert isinstance(target, SecretSpec)
    return Step(target=target, action=action, fingerprint=state.fingerprint(target))


async def test_state_keeps_a_written_fingerprint_and_forgets_a_failed_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    first = State(path, CREDENTIALS)
    kept_old, dropped_old = spec(A, "KEPT", "old"), spec(A, "DROPPED", "old")
    await Rig(FakeApi(), state=first).execute(
        [_written(first, kept_old, Action.CREATE), _written(first, dropped_old, Action.CREATE)]
    )
    first.save()

    second = State(path, CREDENTIALS)
    kept_new, dropped_new = spec(A, "KEPT", "new"), spec(A, "DROPPED", "new")
    api = FakeApi({call("update", A, "DROPPED"): [errors.InvalidArgument("too long", status=400)]})
    results = await Rig(api, state=second).execute(
        [_written(second, kept_new, Action.UPDATE), _written(second, dropped_new, Action.UPDATE)]
    )
    assert results[(A, "kept")].status is Status.SUCCEEDED
    assert results[(A, "dropped")].status is Status.FAILED
    second.save()

    third = State(path, CREDENTIALS)
    assert third.unchanged(kept_new, third.fingerprint(kept_new))
    assert not third.unchanged(kept_old, third.fingerprint(kept_old))
    # Forgotten, not left at the old value: the next run writes it whatever it holds.
    assert not third.unchanged(dropped_new, third.fingerprint(dropped_new))
    assert not third.unchanged(dropped_old, third.fingerprint(dropped_old))
    assert list(json.loads(path.read_text(encoding="utf-8"))["fingerprints"]) == [f"{A}/kept"]


async def test_state_forgets_a_deleted_secret_and_ignores_one_not_attempted(
    tmp_path: Path,
) -> None:
    state = State(tmp_path / "state.json", CREDENTIALS)
    deleted, blocked, refused = spec(A, "OLD"), spec(B, "K1"), spec(B, "K2")
    for target in (deleted, blocked, refused):
        state.settle(_written(state, target, Action.CREATE), Status.SUCCEEDED)
    api = FakeApi({call("update", B, "K2"): [errors.PermissionDenied("denied", status=403)]})
    results = await Rig(api, state=state).execute(
        [
            Step(target=deleted, action=Action.DELETE),
            _written(state, refused, Action.UPDATE),
            _written(state, blocked, Action.UPDATE),
        ]
    )
    assert [r.status for r in results.values()] == [
        Status.SUCCEEDED,
        Status.FAILED,
        Status.NOT_ATTEMPTED,
    ]
    assert not state.unchanged(deleted, state.fingerprint(deleted))
    assert not state.unchanged(refused, state.fingerprint(refused))  # failed: forgotten
    assert state.unchanged(blocked, state.fingerprint(blocked))  # nothing sent: kept


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read it (Expecting property name enclosed in double quotes: "),
        ('{"version": 2, "fingerprints": {}}', "not a bulk-secrets state file of version 1"),
        ('{"version": 1, "fingerprints": []}', "not a bulk-secrets state file of version 1"),
        ('["version", 1]', "not a bulk-secrets state file of version 1"),
    ],
)
async def test_a_corrupt_state_file_is_a_usage_error(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(errors.UsageError) as caught:
        State(path, CREDENTIALS)
    assert str(caught.value).startswith(f"state file {path}: {problem}")


# Listing pipelined with writing


async def test_an_accounts_writes_start_while_another_account_is_still_listed() -> None:
    b_listed = anyio.Event()
    api = FakeApi(list_holds={B: b_listed})
    specs = [spec(A, "K1"), spec(A, "K2"), spec(B, "K1"), spec(B, "K2")]
    rig = Rig(api, workers=2)
    with anyio.fail_after(10):  # a bound, not a measure: waiting for every listing would hang
        async with anyio.create_task_group() as group:
            group.start_soon(rig.apply, specs)
            await api.entered.wait()  # a write began, with B's listing held
            assert ("list", B, "") in api.calls
            b_listed.set()
    results = rig.by_secret([Step(target=s, action=Action.CREATE) for s in specs])
    assert {r.status for r in results.values()} == {Status.SUCCEEDED}
    assert api.calls.index(call("create", A, "K1")) < len(api.calls) - 2


async def test_each_account_is_listed_once_and_decided_by_its_listing() -> None:
    api = FakeApi(listed={A: ["k1", "other"]})
    specs = [spec(A, "K1"), spec(B, "K1"), spec(A, "K2"), spec(B, "K2"), spec(A, "K3")]
    rig = Rig(api, workers=3)
    results = await rig.apply(specs)
    assert Counter(c for c in api.calls if c[0] == "list") == {
        ("list", A, ""): 1,
        ("list", B, ""): 1,
    }
    actions = {name: (r.action, r.status) for name, r in results.items()}
    assert actions[(A, "k1")] == (Action.UPDATE, Status.SUCCEEDED)
    assert {actions[n] for n in actions if n != (A, "k1")} == {(Action.CREATE, Status.SUCCEEDED)}


async def test_a_listing_is_dropped_once_its_accounts_last_secret_is_decided() -> None:
    specs = [spec(A, "K1"), spec(B, "K1"), spec(A, "K2")]
    rig = Rig(FakeApi(listed={A: ["k1"]}))
    await rig.apply(specs)
    assert rig.plan.listings == {}
    kept = Rig(FakeApi(listed={A: ["k1"]}))
    await kept.apply(specs, expected=False)  # not told how many: every listing is kept
    assert set(kept.plan.listings) == {A, B}
    alone = Rig(FakeApi(listed={A: ["k1"]}))
    await alone.apply([spec(A, "K1"), spec(A, "K2")])  # one account: its listing goes with the run
    assert set(alone.plan.listings) == {A}


async def test_an_account_that_cannot_be_listed_sends_nothing_and_the_others_go_on() -> None:
    denied = errors.PermissionDenied("denied", status=403)
    api = FakeApi(listed={B: denied})
    specs = [spec(B, "K1"), spec(A, "K1"), spec(B, "K2")]
    rig = Rig(api, workers=2)
    results = await rig.apply(specs)
    assert results[(A, "k1")].status is Status.SUCCEEDED
    for name in ((B, "k1"), (B, "k2")):
        assert results[name].status is Status.NOT_ATTEMPTED
        assert results[name].error == "account 'acct-b' refused the API key (403): denied"
    assert [c for c in api.calls if c[1] == B] == [("list", B, "")]


async def test_a_run_cancelled_while_listing_reports_every_secret_not_attempted() -> None:
    api = FakeApi(list_holds={A: anyio.Event()})  # never set: the listing hangs
    specs = [spec(A, f"K{i}") for i in range(6)]
    rig = Rig(api, workers=2)
    async with anyio.create_task_group() as group:
        group.start_soon(rig.apply, specs)
        await api.listing.wait()
        group.cancel_scope.cancel()
    results = rig.by_secret([Step(target=s, action=Action.CREATE) for s in specs])
    assert {(r.status, r.attempts) for r in results.values()} == {(Status.NOT_ATTEMPTED, 0)}
    assert [c[0] for c in api.calls] == ["list"]


async def test_a_bug_while_listing_stops_the_run_and_reports_every_secret() -> None:
    api = FakeApi(listed={A: RuntimeError("boom")})
    specs = [spec(A, "K1"), spec(B, "K1")]
    rig = Rig(api)
    results = await rig.apply(specs)
    reason = "internal error (RuntimeError)"
    assert rig.stops.stopped is not None and rig.stops.stopped.startswith(reason)
    assert {r.status for r in results.values()} == {Status.NOT_ATTEMPTED}
    assert all(c[0] == "list" for c in api.calls)
