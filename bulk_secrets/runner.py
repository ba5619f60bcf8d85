"""Fan-out: a fixed pool of workers takes planned steps and turns each into one result.

At most ``concurrency`` workers exist, whatever the manifest's size: a worker takes the next
step only when it is free, so a secret never becomes a task of its own. A failed secret is a
result, not an exception: only cancellation, a rejected API key (401, which stops the run) and
a refused account (403, which stops that account) change what the other workers do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from . import errors
from .models import Action, Result, SecretSpec, Status, Step
from .options import ApplyOptions, OnExisting
from .ratelimit import Rates
from .report import ReportSink, Summary
from .retry import RetryPolicy
from .scheduler import Scheduler
from .state import State

# A create that meets 409 becomes an update; an update that meets 404 becomes a create. Past
# this many turns the secret is being created and deleted by someone else at the same time.
_MAX_TURNS = 4
# How far the scheduler reads the plan ahead, per worker: room for accounts to take turns.
_WINDOW_PER_WORKER = 4
INTERRUPTED = "interrupted before an answer came: the secret may or may not have been changed"


class SecretsApi(Protocol):
    """The calls the runner makes; :class:`~bulk_secrets.client.SecretsClient` provides them."""

    async def create(self, spec: SecretSpec) -> int: ...

    async def update(self, spec: SecretSpec) -> int: ...

    async def delete(self, account: str, secret_id: str) -> int: ...


@dataclass(slots=True)
class _Progress:
    """What one worker has done so far for its current step."""

    action: Action
    attempts: int = 0


class Runner:
    def __init__(
        self,
        api: SecretsApi,
        *,
        options: ApplyOptions,
        retry: RetryPolicy,
        rates: Rates,
        sink: ReportSink,
        summary: Summary,
        state: State | None = None,
    ) -> None:
        self._api = api
        self._options = options
        self._retry = retry
        self._rates = rates
        self._workers = options.concurrency
        self._sink = sink
        self._summary = summary
        self._state = state
        self._aborted: str | None = None
        self._refused: dict[str, str] = {}

    @property
    def aborted(self) -> str | None:
        """Why the run stopped early, or None."""
        return self._aborted

    async def execute(self, steps: Iterable[Step]) -> None:
        """Carry out every step; each ends as exactly one result in the sink."""
        scheduler = Scheduler(steps, self._rates, window=_WINDOW_PER_WORKER * self._workers)
        try:
            async with anyio.create_task_group() as workers:
                for _ in range(self._workers):
                    workers.start_soon(self._work, scheduler)
        finally:
            reason = self._aborted or "the run was interrupted"
            for step in scheduler.remaining():
                self._record(step, _settled(step, Status.NOT_ATTEMPTED, reason))

    async def _work(self, scheduler: Scheduler) -> None:
        take_now = scheduler.take_now
        while True:
            step = take_now()
            if isinstance(step, float):  # every account must wait for its turn
                step = await scheduler.take()
            if step is None:
                return
            try:
                await self._carry_out(step)
            finally:
                scheduler.done(step)

    async def _carry_out(self, step: Step) -> None:
        if step.outcome is not None:
            self._record(step, _settled(step, step.outcome, step.reason))
            return
        blocked = self._blocked(step.account)
        if blocked is not None:
            self._record(step, _settled(step, Status.NOT_ATTEMPTED, blocked))
            return
        progress = _Progress(step.action)
        try:
            if step.action is Action.DELETE:
                result = await self._delete(step, progress)
            else:
                result = await self._write(step, progress)
        except anyio.get_cancelled_exc_class():
            self._record(step, _failed(step, progress, None, INTERRUPTED))
            raise
        except errors.Unauthenticated as exc:
            self._aborted = self._aborted or f"the API key was rejected (401): {exc.message}"
            result = _failed(step, progress, exc, str(exc))
        except errors.PermissionDenied as exc:
            self._refused.setdefault(
                step.account,
                f"account {step.account!r} refused the API key (403): {exc.message}",
            )
            result = _failed(step, progress, exc, str(exc))
        except errors.ApiError as exc:
            result = _failed(step, progress, exc, str(exc))
        self._record(step, result)

    def _blocked(self, account: str) -> str | None:
        return self._aborted or self._refused.get(account)

    def _record(self, step: Step, result: Result) -> None:
        self._summary.add(result)
        self._sink.write(result)
        if self._state is not None and step.outcome is None:  # settled by the plan: no write
            self._state.settle(step, result.status)

    async def _delete(self, step: Step, progress: _Progress) -> Result:
        try:
            status = await self._request(
                step, progress, self._api.delete, step.account, step.secret_id
            )
        except errors.NotFound as exc:  # gone already: what was wanted
            return _succeeded(step, progress, exc.status)
        return _succeeded(step, progress, status)

    async def _write(self, step: Step, progress: _Progress) -> Result:
        spec = step.spec
        if spec is None:
            raise ValueError(f"a {step.action} step needs a spec")
        for _ in range(_MAX_TURNS):
            if progress.action is Action.CREATE:
                try:
                    status = await self._request(step, progress, self._api.create, spec)
                except errors.AlreadyExists as exc:
                    if self._options.on_existing is OnExisting.SKIP:
                        return _failed(step, progress, exc, "already exists", Status.SKIPPED)
                    if self._options.on_existing is OnExisting.FAIL:
                        return _failed(step, progress, exc, "already exists (--on-existing fail)")
                    progress.action = Action.UPDATE
                    continue
            else:
                try:
                    status = await self._request(step, progress, self._api.update, spec)
                except errors.NotFound:
                    progress.action = Action.CREATE
                    continue
            return _succeeded(step, progress, status)
        return _failed(step, progress, None, "the secret kept being deleted and created by others")

    async def _request(
        self,
        step: Step,
        progress: _Progress,
        call: Callable[..., Awaitable[int]],
        *args: Any,
    ) -> int:
        """One request in its account's turn; retried only when it fails in a way that may pass.

        The first attempt is made here, outside the retry machinery, so that a request that
        succeeds first time pays nothing for it.
        """
        progress.attempts += 1
        try:
            return await self._rates.call(step.account, call, *args)
        except errors.TransientError as exc:
            failure = exc

        async def again() -> int:
            progress.attempts += 1
            return await self._rates.call(step.account, call, *args)

        return await self._retry.after(
            failure, again, stopped=lambda: self._blocked(step.account) is not None
        )


def _settled(step: Step, status: Status, reason: str | None) -> Result:
    return Result.of(step, action=step.action, status=status, error=reason)


def _succeeded(step: Step, progress: _Progress, http_status: int | None) -> Result:
    return Result(  # the hot path: built directly, not through Result.of
        account=step.account,
        key_name=step.key_name,
        secret_id=step.secret_id,
        location=step.location,
        action=progress.action,
        status=Status.SUCCEEDED,
        http_status=http_status,
        attempts=progress.attempts,
    )


def _failed(
    step: Step,
    progress: _Progress,
    exc: errors.ApiError | None,
    reason: str,
    status: Status = Status.FAILED,
) -> Result:
    return Result.of(
        step,
        action=progress.action,
        status=status,
        http_status=None if exc is None else exc.status,
        attempts=progress.attempts,
        error=reason,
    )
