"""Fan-out: a fixed pool of workers takes secrets from the plan and turns each into a result.

At most ``concurrency`` workers exist, whatever the manifest's size: a worker takes the next
secret only when it is free, so a secret never becomes a task of its own. A failed secret is a
result, not an exception: only cancellation, a rejected API key (401, which stops the run) and
a refused account (403, which stops that account) change what the other workers do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import anyio

from . import errors
from .client import SecretsClient
from .models import Action, Credentials, Result, SecretSpec, Status
from .options import ApplyOptions, OnExisting
from .report import NullReport, ReportSink, Summary
from .retry import RetryPolicy, Sleep

# A create that meets 409 becomes an update; an update that meets 404 becomes a create. Past
# this many turns the secret is being created and deleted by someone else at the same time.
_MAX_TURNS = 4
INTERRUPTED = "interrupted before an answer came: the secret may or may not have been written"


class SecretsApi(Protocol):
    """The calls the runner makes; :class:`~bulk_secrets.client.SecretsClient` provides them."""

    async def create(self, spec: SecretSpec) -> int: ...

    async def update(self, spec: SecretSpec) -> int: ...


@dataclass(slots=True)
class _Progress:
    """What one worker has done so far for its current secret."""

    action: Action
    attempts: int = 0


class Runner:
    def __init__(
        self,
        api: SecretsApi,
        *,
        options: ApplyOptions,
        sink: ReportSink,
        summary: Summary,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._api = api
        self._options = options
        self._sink = sink
        self._summary = summary
        self._retry = RetryPolicy(options.retry, sleep=sleep)
        self._aborted: str | None = None
        self._refused: dict[str, str] = {}

    @property
    def aborted(self) -> str | None:
        """Why the run stopped early, or None."""
        return self._aborted

    async def execute(self, specs: Iterable[SecretSpec]) -> None:
        """Provision every secret; each ends as exactly one result in the sink."""
        pending = iter(specs)
        try:
            async with anyio.create_task_group() as workers:
                for _ in range(self._options.concurrency):
                    workers.start_soon(self._work, pending)
        finally:
            reason = self._aborted or "the run was interrupted"
            for spec in pending:
                self._record(
                    Result.of(spec, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=reason)
                )

    async def _work(self, pending: Iterator[SecretSpec]) -> None:
        for spec in pending:
            blocked = self._blocked(spec.account)
            if blocked is not None:
                self._record(
                    Result.of(
                        spec, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=blocked
                    )
                )
                if self._aborted:
                    return
                continue
            progress = _Progress(Action.CREATE)
            try:
                result = await self._provision(spec, progress)
            except anyio.get_cancelled_exc_class():
                self._record(
                    Result.of(
                        spec,
                        action=progress.action,
                        status=Status.FAILED,
                        attempts=progress.attempts,
                        error=INTERRUPTED,
                    )
                )
                raise
            self._record(result)

    def _blocked(self, account: str) -> str | None:
        return self._aborted or self._refused.get(account)

    def _record(self, result: Result) -> None:
        self._summary.requests += result.attempts
        self._summary.add(result)
        self._sink.write(result)

    async def _provision(self, spec: SecretSpec, progress: _Progress) -> Result:
        try:
            for _ in range(_MAX_TURNS):
                if progress.action is Action.CREATE:
                    try:
                        status = await self._send(self._api.create, spec, progress)
                    except errors.AlreadyExists as exc:
                        if self._options.on_existing is OnExisting.SKIP:
                            return _done(spec, progress, Status.SKIPPED, exc, "already exists")
                        if self._options.on_existing is OnExisting.FAIL:
                            return _done(
                                spec,
                                progress,
                                Status.FAILED,
                                exc,
                                "already exists (--on-existing fail)",
                            )
                        progress.action = Action.UPDATE
                        continue
                else:
                    try:
                        status = await self._send(self._api.update, spec, progress)
                    except errors.NotFound:
                        progress.action = Action.CREATE
                        continue
                return Result.of(
                    spec,
                    action=progress.action,
                    status=Status.SUCCEEDED,
                    http_status=status,
                    attempts=progress.attempts,
                )
            return _done(
                spec,
                progress,
                Status.FAILED,
                None,
                "the secret kept being deleted and created by someone else",
            )
        except errors.Unauthenticated as exc:
            self._aborted = self._aborted or f"the API key was rejected (401): {exc.message}"
            return _done(spec, progress, Status.FAILED, exc, str(exc))
        except errors.PermissionDenied as exc:
            self._refused.setdefault(
                spec.account,
                f"account {spec.account!r} refused the API key (403): {exc.message}",
            )
            return _done(spec, progress, Status.FAILED, exc, str(exc))
        except errors.ApiError as exc:
            return _done(spec, progress, Status.FAILED, exc, str(exc))

    async def _send(
        self,
        call: Callable[[SecretSpec], Awaitable[int]],
        spec: SecretSpec,
        progress: _Progress,
    ) -> int:
        async def once() -> int:
            progress.attempts += 1
            return await call(spec)

        return await self._retry.call(once, stopped=lambda: self._blocked(spec.account) is not None)


def _done(
    spec: SecretSpec,
    progress: _Progress,
    status: Status,
    exc: errors.ApiError | None,
    reason: str,
) -> Result:
    return Result.of(
        spec,
        action=progress.action,
        status=status,
        http_status=None if exc is None else exc.status,
        attempts=progress.attempts,
        error=reason,
    )


async def apply_secrets(
    specs: Iterable[SecretSpec],
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    report: ReportSink | None = None,
) -> Summary:
    """Write every secret of ``specs``; return the run's summary.

    Every secret ends as exactly one result in ``report``, which is finished (and, for JSON,
    written in place) even when the run is interrupted.
    """
    options = options or ApplyOptions()
    sink = report or NullReport()
    summary = Summary()
    try:
        async with SecretsClient(
            options.base_url,
            credentials,
            connections=options.concurrency,
            timeout=options.timeout,
        ) as client:
            runner = Runner(client, options=options, sink=sink, summary=summary)
            await runner.execute(specs)
            summary.aborted = runner.aborted
    finally:
        summary.finished = summary.started + summary.duration
        sink.finish(summary)
    return summary
