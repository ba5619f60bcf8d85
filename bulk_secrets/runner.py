"""Fan-out: a fixed pool of workers lists accounts and turns each planned step into one result.

At most ``concurrency`` workers exist, whatever the manifest's size: a worker takes the next
work (a listing, or a step) only when it is free, so neither a secret nor an account becomes a
task of its own. A failed secret is a
result, not an exception: what an API error stops (the run on a 401, the account on a 403) is
for :class:`~bulk_secrets.policy.Stops` to say, and a step that fails for any other reason
(a bug) fails that secret and stops the run, so that every secret still ends as one result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from . import errors
from .errors import ReportWriteFailed
from .events import QUIET, Observer
from .models import CREATE, DELETE, SUCCEEDED, UPDATE, Action, Result, SecretSpec, Status, Step
from .planner import Lister, Listing, Plan, list_account
from .policy import Gate, Policy, Sent, Stops, internal_error
from .ratelimit import Rates
from .report import ReportSink, Summary
from .retry import RetryPolicy
from .scheduler import ListAccount, Scheduler
from .state import State

# A create that meets 409 becomes an update; an update that meets 404 becomes a create. Past
# this many turns the secret is being created and deleted by someone else at the same time.
MAX_TURNS = 4
# How far the scheduler reads the plan ahead, per worker: room for accounts to take turns.
_WINDOW_PER_WORKER = 4
IN_FLIGHT = " before an answer came: the secret may or may not have been changed"
INTERRUPTED = f"interrupted{IN_FLIGHT}"
CONTESTED = "the secret kept being deleted and created by others"


class SecretsApi(Lister, Protocol):
    """The calls the runner makes; :class:`~bulk_secrets.client.SecretsClient` provides them."""

    async def create(self, spec: SecretSpec) -> int: ...

    async def update(self, spec: SecretSpec) -> int: ...

    async def delete(self, account: str, secret_id: str) -> int: ...


@dataclass(slots=True)
class _Progress:
    """What one worker has done so far for its current step. Each worker has one, started
    afresh at each step (see :meth:`Runner._carry_out`): one object per worker, not one per
    secret. Nothing keeps it past its step: the step's result is built from it at once."""

    action: Action
    secret_id: str
    attempts: int = 0


_METHODS = {Action.CREATE: "POST", Action.UPDATE: "PATCH", Action.DELETE: "DELETE"}


class Runner:
    def __init__(
        self,
        api: SecretsApi,
        *,
        workers: int,
        policy: Policy,
        stops: Stops,
        retry: RetryPolicy,
        rates: Rates,
        sink: ReportSink,
        summary: Summary,
        state: State | None = None,
        observer: Observer = QUIET,
    ) -> None:
        self._api = api
        self._workers = workers
        self._policy = policy
        self._stops = stops
        self._retry = retry
        self._rates = rates
        self._gate = Gate(rates, stops, observer)
        self._observer = observer
        self._tell = observer.result if observer.results else None
        self._sink = sink
        self._summary = summary
        self._state = state

    async def execute(
        self,
        items: Iterable[Step | SecretSpec],
        *,
        plan: Plan | None = None,
        expected: Mapping[str, int] | None = None,
    ) -> None:
        """Carry out every step; each ends as exactly one result in the sink. A spec is decided
        by ``plan`` once its account is listed; ``expected`` (specs per account) lets a listing
        go once its account's last spec is decided."""
        scheduler = Scheduler(
            items,
            self._rates,
            window=_WINDOW_PER_WORKER * self._workers,
            plan=plan,
            expected=expected,
        )
        try:
            async with anyio.create_task_group() as workers:
                for _ in range(self._workers):
                    workers.start_soon(self._work, scheduler)
        finally:
            stops = self._stops
            reason = stops.aborted or stops.stopped or "the run was interrupted"
            for step in scheduler.remaining():
                self._record(step, _settled(step, Status.NOT_ATTEMPTED, reason))

    async def _work(self, scheduler: Scheduler) -> None:
        take_now, done = scheduler.take_now, scheduler.done
        progress = _Progress(CREATE, "")
        while True:
            work = take_now()
            if not isinstance(work, Step):  # a step is the usual: one check for it
                if isinstance(work, float):  # every account must wait for its turn or listing
                    work = await scheduler.take()
                if work is None:
                    return
                if isinstance(work, ListAccount):
                    scheduler.listed(work.account, await self._list(work.account))
                    continue
            try:
                await self._carry_out(work, progress)
            finally:
                done(work)

    async def _list(self, account: str) -> Listing:
        """What ``account`` holds, or why it cannot be known; a bug stops the run."""
        try:
            return await list_account(self._api, account, retry=self._retry, gate=self._gate)
        except Exception as exc:  # a bug: the account's secrets are not attempted
            reason = internal_error(exc)
            self._stops.stop(reason)
            return Listing(problem=reason)

    async def _carry_out(self, step: Step, progress: _Progress) -> None:
        if step.outcome is not None:
            self._record(step, _settled(step, step.outcome, step.reason))
            return
        target = step.target
        stops = self._stops
        if not stops.clear:  # something stopped: this account, or the run?
            blocked = stops.blocked(target.account)
            if blocked is not None:
                self._record(step, _settled(step, Status.NOT_ATTEMPTED, blocked))
                return
        action = progress.action = step.action  # the worker's progress, afresh for this step
        progress.secret_id = target.secret_id
        progress.attempts = 0
        gate = self._gate
        try:
            if action is CREATE and isinstance(target, SecretSpec) and not gate.observed:
                # The usual step. Its first attempt is made here, as _request would make it,
                # so that its every wait has no coroutine of _write's nor _request's to pass
                # through; what follows a failure is _write's.
                account = target.account
                progress.attempts = 1
                rate, sent_at, now = gate.turn(account)
                if sent_at > now:
                    sent_at = await self._rates.wait_turn(rate, sent_at)
                try:
                    status = await self._api.create(target)
                except errors.ApiError as exc:
                    gate.refused(account, rate, sent_at, exc)
                    result = await self._write(step, progress, exc)
                else:
                    gate.passed(account, rate)
                    result = _succeeded(step, progress, status)
            elif action is DELETE:
                result = await self._delete(step, progress)
            else:
                result = await self._write(step, progress)
        except anyio.get_cancelled_exc_class():
            why = self._stops.stopped or "interrupted"
            self._record(step, _ended(step, progress, Status.FAILED, f"{why}{IN_FLIGHT}"))
            raise
        except errors.ApiError as exc:
            reason = self._stops.learn(step.target.account, exc)
            result = _ended(step, progress, Status.FAILED, reason, exc)
        except Exception as exc:  # a bug: this secret fails, and nothing more is sent
            reason = internal_error(exc)
            self._stops.stop(reason)
            result = _ended(step, progress, Status.FAILED, reason)
        self._record(step, result)

    def _record(self, step: Step, result: Result) -> None:
        self._summary.add(result)
        if self._tell is not None:
            self._tell(result)
        if self._state is not None and step.outcome is None:  # settled by the plan: no write
            self._state.settle(step, result.status)
        try:
            self._sink.write(result)
        except ReportWriteFailed as exc:  # the run's record cannot be kept: send no more
            self._stops.stop(str(exc))

    async def _delete(self, step: Step, progress: _Progress) -> Result:
        target = step.target
        try:
            status = await self._request(
                target.account, progress, self._api.delete, target.account, target.secret_id
            )
        except errors.NotFound as exc:  # gone already: what was wanted
            return _succeeded(step, progress, exc.status)
        return _succeeded(step, progress, status)

    async def _write(
        self, step: Step, progress: _Progress, failure: errors.ApiError | None = None
    ) -> Result:
        """The step's create or update, turned into the other as the server answers; a
        create whose first attempt failed with ``failure`` (:meth:`_carry_out`) goes on from
        there."""
        spec = step.spec
        if spec is None:
            raise ValueError(f"a {step.action} step needs a spec")
        turn = progress.action
        contested: errors.ApiError | None = None
        for _ in range(MAX_TURNS):
            progress.action = turn
            if turn is CREATE:
                first, failure = failure, None
                try:
                    if first is None:
                        status = await self._request(spec.account, progress, self._api.create, spec)
                    else:
                        status = await self._after(
                            spec.account, progress, self._api.create, (spec,), first
                        )
                except errors.AlreadyExists as exc:
                    settled = self._policy.when_exists()
                    if settled is not None:  # as the planner does when it lists the secret
                        progress.action, outcome, reason = settled
                        return _ended(step, progress, outcome, reason, exc)
                    turn, contested = UPDATE, exc
                    continue
            else:
                try:
                    status = await self._request(spec.account, progress, self._api.update, spec)
                except errors.NotFound as exc:
                    turn, contested = CREATE, exc
                    continue
            return _succeeded(step, progress, status)
        return _ended(step, progress, Status.FAILED, CONTESTED, contested)

    async def _request(
        self,
        account: str,
        progress: _Progress,
        call: Callable[..., Awaitable[int]],
        *args: Any,
    ) -> int:
        """One request in its account's turn; retried only when it fails in a way that may pass.

        The first attempt is made here, through the gate's steps inline and outside the retry
        machinery: a request that succeeds first time, as nearly all do, has no coroutine of
        the gate's nor of tenacity's for its every wait to pass through. An observed run (its
        requests timed) sends each attempt through the gate's own :meth:`~Gate.send`.
        """
        gate = self._gate
        if gate.observed:
            return await self._retried(account, progress, call, args, None)
        progress.attempts += 1
        rate, sent_at, now = gate.turn(account)
        if sent_at > now:
            sent_at = await self._rates.wait_turn(rate, sent_at)
        try:
            status = await call(*args)
        except errors.ApiError as exc:
            gate.refused(account, rate, sent_at, exc)
            return await self._after(account, progress, call, args, exc)
        gate.passed(account, rate)
        return status

    async def _after(
        self,
        account: str,
        progress: _Progress,
        call: Callable[..., Awaitable[int]],
        args: tuple[Any, ...],
        failure: errors.ApiError,
    ) -> int:
        """The request whose first attempt failed with ``failure``: raised again, unless it
        may pass when retried."""
        if not isinstance(failure, errors.TransientError):
            raise failure
        return await self._retried(account, progress, call, args, failure)

    async def _retried(
        self,
        account: str,
        progress: _Progress,
        call: Callable[..., Awaitable[int]],
        args: tuple[Any, ...],
        failure: errors.TransientError | None,
    ) -> int:
        """The request's attempts through the gate, after its first ``failure`` (None: the
        first attempt too), as long as the retry policy allows and the account may send."""

        async def attempt() -> int:
            progress.attempts += 1
            sent = Sent(_METHODS[progress.action], account, progress.secret_id, progress.attempts)
            return await self._gate.send(sent, call, *args)

        def stopped() -> bool:
            return self._stops.blocked(account) is not None

        if failure is None:
            return await self._retry.call(attempt, stopped=stopped)
        return await self._retry.after(failure, attempt, stopped=stopped)


def _settled(step: Step, status: Status, reason: str | None) -> Result:
    return Result.of(step.target, action=step.action, status=status, error=reason)


def _succeeded(step: Step, progress: _Progress, http_status: int | None) -> Result:
    target = step.target
    return Result(  # the hot path: its fields by position, not through Result.of
        target.account,
        target.key_name,
        target.secret_id,
        target.location,
        progress.action,
        SUCCEEDED,
        http_status,
        progress.attempts,
    )


def _ended(
    step: Step,
    progress: _Progress,
    status: Status,
    reason: str,
    exc: errors.ApiError | None = None,
) -> Result:
    """What became of a step that was tried and did not succeed: failed, or skipped by policy."""
    return Result.of(
        step.target,
        action=progress.action,
        status=status,
        http_status=None if exc is None else exc.status,
        attempts=progress.attempts,
        error=reason,
    )
