"""A run from start to end: one client session; list and plan; then execute and report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self

from .client import SecretsClient
from .errors import UsageError
from .models import Action, Credentials, Result, SecretSpec, Status
from .options import ApplyOptions
from .planner import Plan, Target, list_accounts
from .ratelimit import Rates
from .report import NullReport, ReportSink, Summary
from .retry import RetryPolicy
from .runner import Runner
from .state import State


class SecretSource(Protocol):
    """What a run reads: checked manifests (:class:`~bulk_secrets.manifest.ManifestSet`) are one.

    ``targets`` and ``accounts`` must not read values; ``specs`` reads them, once, in order.
    """

    def accounts(self) -> list[str]: ...

    def targets(self) -> Iterable[Target]: ...

    def specs(self) -> Iterable[SecretSpec]: ...

    def verify_unchanged(self) -> None: ...


class SpecList:
    """A plain sequence of specs as a :class:`SecretSource`."""

    def __init__(self, specs: Sequence[SecretSpec]) -> None:
        self._specs = specs

    def accounts(self) -> list[str]:
        return list(dict.fromkeys(spec.account for spec in self._specs))

    def targets(self) -> Iterable[SecretSpec]:
        return self._specs

    def specs(self) -> Iterable[SecretSpec]:
        return self._specs

    def verify_unchanged(self) -> None:
        pass  # held in memory: cannot change


class Provisioner:
    """Plans and applies one source of secrets over one keep-alive client session."""

    def __init__(
        self,
        source: SecretSource | Sequence[SecretSpec],
        *,
        credentials: Credentials,
        options: ApplyOptions | None = None,
        state: State | None = None,
        done: frozenset[tuple[str, str]] | None = None,
        started: float | None = None,
    ) -> None:
        """``started`` (a ``time.monotonic()``) is when the run's clock starts: by default now;
        the CLI passes the moment it began reading the manifests."""
        self._source = SpecList(source) if isinstance(source, Sequence) else source
        self._options = options or ApplyOptions()
        self._state = state
        self._done = done
        self._client = SecretsClient(
            self._options.base_url,
            credentials,
            connections=self._options.concurrency,
            timeout=self._options.timeout,
        )
        self._retry = RetryPolicy(self._options.retry)
        self._rates = Rates(self._options.max_rps)
        self._summary = Summary() if started is None else Summary(started=started)

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    @property
    def client(self) -> SecretsClient:
        return self._client

    async def plan(self) -> Plan:
        """List every target account and decide what to do; nothing is written."""
        plan = await list_accounts(
            self._client, self._source.accounts(), self._retry, self._rates, self._options
        )
        plan.done, plan.state = self._done, self._state
        plan.plan_deletions(self._source.targets())
        self._source.verify_unchanged()
        return plan

    def abandon(self, report: ReportSink, reason: str) -> Summary:
        """Report every secret as not attempted, for a run stopped before it wrote anything."""
        for target in self._source.targets():
            result = Result.of(
                target, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=reason
            )
            self._summary.add(result)
            report.write(result)
        return self._finish(report, reason)

    async def execute(self, plan: Plan, report: ReportSink | None = None) -> Summary:
        """Carry out the plan. Every secret ends as one result in ``report``, which is
        finished (for JSON, put in place) even when the run is interrupted."""
        sink = report or NullReport()
        runner = Runner(
            self._client,
            options=self._options,
            retry=self._retry,
            rates=self._rates,
            sink=sink,
            summary=self._summary,
            state=self._state,
        )
        try:
            await runner.execute(plan.steps(self._source.specs()))
        finally:
            self._finish(sink, plan.aborted or runner.aborted)
            if self._state is not None:
                self._state.save()
        return self._summary

    def _finish(self, sink: ReportSink, aborted: str | None) -> Summary:
        summary = self._summary
        summary.aborted = aborted
        summary.requests = self._client.requests_sent
        summary.retries = self._retry.retries
        summary.finished = summary.started + summary.duration
        sink.finish(summary)
        return summary


async def apply_secrets(
    source: SecretSource | Sequence[SecretSpec],
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    report: ReportSink | None = None,
    state: State | None = None,
    done: frozenset[tuple[str, str]] | None = None,
    confirm: Callable[[Plan], Awaitable[bool]] | None = None,
) -> Summary:
    """List, plan and apply: the library's one call for a whole run.

    ``confirm`` is asked before a plan with deletions is carried out; when it says no, nothing
    is changed and :class:`UsageError` is raised.
    """
    async with Provisioner(
        source, credentials=credentials, options=options, state=state, done=done
    ) as provisioner:
        plan = await provisioner.plan()
        if plan.deletions and confirm is not None and not await confirm(plan):
            raise UsageError("the deletions were not confirmed; nothing was changed")
        return await provisioner.execute(plan, report)
