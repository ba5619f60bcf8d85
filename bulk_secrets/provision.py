"""A run from start to end, behind one call.

:func:`apply_secrets` lists each target account, decides one step per secret, asks ``confirm``
before deletions, carries the plan out and owns the report from its opening to its place on
disk. An account's writes start as soon as its own listing is done; with ``prune`` every account
is listed first, since the deletions are confirmed before anything is written. Whatever ends the
run (success, a declined confirmation, an error, a cancellation), every secret is in the report
once and no file is left open. :func:`plan_secrets` and :func:`verify_secrets` list every
account first, plan the same way and write nothing. :func:`apply` is the same
run for scripts and notebooks, on an event loop of its own.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import itertools
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar

import anyio

from .client import SecretsClient
from .clock import SYSTEM_CLOCK, Clock
from .errors import BulkSecretsError, ReportWriteFailed, StateSaveFailed, UsageError
from .events import QUIET, Observer
from .firectl_config import FirectlConfig
from .manifest import ManifestSet
from .models import Action, Credentials, Result, SecretSpec, SecretValue, Status, Step, Target
from .options import ApplyOptions
from .planner import Drift, Listing, Plan, drift, list_accounts
from .policy import Hints, Policy, Stops, internal_error
from .ratelimit import Rates
from .report import ReportSink, Summary, check_report_path, open_report, read_done
from .retry import RetryPolicy
from .runner import Runner
from .sharding import Shard
from .state import State, check_state_path

T = TypeVar("T")
DECLINED = "the deletions were not confirmed; nothing was changed"
DEADLINE = "deadline reached"
NOT_TARGETED = "account not targeted by this run"
INTERRUPTED = "interrupted"


class SecretSource(Protocol):
    """What a run reads: checked manifests (:class:`~bulk_secrets.manifest.ManifestSet`) are one.

    ``targets`` and ``accounts`` must not read values; ``specs`` reads them, once, in the order
    of ``targets``. ``started`` (a ``time.monotonic()``) is when the source began to be read:
    the summary's duration runs from there.
    """

    @property
    def started(self) -> float: ...

    @property
    def count(self) -> int:
        """How many secrets, counting each account a secret goes to."""
        ...

    @property
    def excluded_count(self) -> int: ...

    @property
    def shard(self) -> Shard | None:
        """The shard of the accounts the source was read for, if one."""
        ...

    def accounts(self) -> list[str]: ...

    def per_account(self) -> Mapping[str, int]:
        """How many secrets ``specs`` gives each account."""
        ...

    def targets(self) -> Iterable[Target]: ...

    def specs(self) -> Iterable[SecretSpec]: ...

    def verify_unchanged(self) -> None: ...

    def excluded(self) -> Iterable[Target]:
        """Secrets the source names for accounts this run does not target (reported skipped)."""
        ...


class SpecList:
    """A plain sequence of specs as a :class:`SecretSource`."""

    def __init__(self, specs: Sequence[SecretSpec]) -> None:
        self._specs = specs
        self.started = time.monotonic()
        self.count = len(specs)
        self.excluded_count = 0
        self.shard: Shard | None = None

    def accounts(self) -> list[str]:
        return list(dict.fromkeys(spec.account for spec in self._specs))

    def per_account(self) -> Mapping[str, int]:
        return collections.Counter(spec.account for spec in self._specs)

    def targets(self) -> Iterable[SecretSpec]:
        return self._specs

    def specs(self) -> Iterable[SecretSpec]:
        return self._specs

    def verify_unchanged(self) -> None:
        pass  # held in memory: cannot change

    def excluded(self) -> Iterable[Target]:
        return ()


Source = SecretSource | Sequence[SecretSpec]
PathLike = str | os.PathLike[str]


def credentials_for(
    manifests: ManifestSet,
    env: Mapping[str, str] | None = None,
    *,
    firectl: FirectlConfig | None = None,
) -> Credentials:
    """The API keys the manifests need: each account's own key where its manifest names one
    (``apiKeys``), else ``FIREWORKS_API_KEY``, else firectl's (``read_firectl_config()``)."""
    env = os.environ if env is None else env
    per_account: dict[str, SecretValue] = {}
    named: dict[str, str] = {}
    for manifest in manifests:
        for account, var in manifest.api_keys.items():
            if named.setdefault(account, var) != var:
                raise UsageError(
                    f"two API keys for account {account!r}: {named[account]} and {var} "
                    f"({manifest.name}); name one"
                )
            per_account[account] = SecretValue(env[var])
    key = api_key_from(env, firectl)
    if key is None:
        missing = sorted(set(manifests.accounts()) - per_account.keys())
        if missing:
            raise UsageError(
                "no API key: set FIREWORKS_API_KEY (or run firectl set-api-key); "
                f"accounts without a key of their own: {', '.join(missing[:5])}"
            )
    return Credentials(key, per_account or None)


def api_key_from(
    env: Mapping[str, str] | None = None, firectl: FirectlConfig | None = None
) -> SecretValue | None:
    """The API key of accounts without one of their own: ``FIREWORKS_API_KEY``, else firectl's."""
    from_env = (os.environ if env is None else env).get("FIREWORKS_API_KEY")
    return SecretValue(from_env) if from_env else firectl.api_key if firectl else None


async def list_secrets(
    accounts: Sequence[str],
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    stop_when: Callable[[], Awaitable[str]] | None = None,
) -> dict[str, Listing]:
    """What each account holds (all pages), or why it could not be listed; never a value."""
    run = _Run(
        _Accounts(accounts),
        credentials=credentials,
        options=options,
        clock=SYSTEM_CLOCK,
        stop_when=stop_when,
    )
    async with run:
        plan = await run.plan()
    return {
        account: plan.listings.get(account) or Listing(problem=plan.stopped) for account in accounts
    }


class _Accounts(SpecList):
    """Accounts, and no secret: what :func:`list_secrets` lists."""

    def __init__(self, accounts: Sequence[str]) -> None:
        super().__init__(())
        self._accounts = list(dict.fromkeys(accounts))

    def accounts(self) -> list[str]:
        return self._accounts


async def apply_secrets(
    source: Source,
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    report: PathLike | None = None,
    state: PathLike | None = None,
    only_failed: PathLike | None = None,
    confirm: Callable[[Plan], Awaitable[bool]] | None = None,
    on_planned: Callable[[Plan], None] | None = None,
    hints: Hints | None = None,
    clock: Clock = SYSTEM_CLOCK,
    stop_when: Callable[[], Awaitable[str]] | None = None,
    observer: Observer = QUIET,
) -> Summary:
    """List, plan, confirm and apply: the library's one call for a whole run.

    - ``report``: a ``.json``, ``.jsonl`` or ``.csv`` path for the per-secret report.
    - ``state``: a file of fingerprints of the values written; unchanged ones are skipped.
    - ``only_failed``: an earlier report of the same source; what it shows done is skipped.
    - ``confirm`` is asked before a plan with deletions is carried out; when it says no,
      nothing is changed, the report lists every secret not attempted, and
      :class:`UsageError` is raised.
    - ``on_planned`` is told the plan once it is settled, before the first write.
    - ``hints``: the caller's words added to the reasons it gave rise to (see
      :mod:`bulk_secrets.policy`).
    - ``clock``: what paces and waits (tests pass a virtual one).
    - ``observer`` is told the phases, each result and (if it asks) each request.
    - ``stop_when``: awaited beside the run; when it returns a reason (say, a signal came),
      the run stops as at its deadline: what is in flight is cancelled and reported failed,
      the rest not attempted, with that reason, and the summary says it in ``stopped``.

    Every secret ends as one result, in the summary's counts and in the report.
    """
    report_path = None if report is None else Path(report)
    check_report_path(report_path)
    if state is not None:
        check_state_path(Path(state))
    run = _Run(
        source,
        credentials=credentials,
        options=options,
        state=state,
        only_failed=only_failed,
        hints=hints,
        clock=clock,
        stop_when=stop_when,
        observer=observer,
    )
    with open_report(report_path) as sink:
        async with run:
            try:
                plan = await run.plan(list_first=run.prunes)
                confirmed = await run.confirm(plan, confirm)
            except BaseException as exc:
                reason = INTERRUPTED if isinstance(exc, anyio.get_cancelled_exc_class()) else exc
                run.abandon(sink, f"stopped before any write: {reason}")
                raise
            if not confirmed:
                if run.stopped:
                    return run.abandon(sink, f"stopped before any write: {run.stopped}")
                run.abandon(sink, f"stopped before any write: {DECLINED}")
                raise UsageError(DECLINED)
            if on_planned is not None:
                on_planned(plan)
            return await run.execute(plan, sink)


class PlanSteps:
    """The steps of a plan, one per secret, none with its value: made as they are read, so a
    plan of a million secrets is never held (each reading reads the manifests again)."""

    def __init__(self, plan: Plan, run: _Run) -> None:
        self._plan = plan
        self._run = run

    def __len__(self) -> int:
        source = self._run.source
        return source.excluded_count + source.count + len(self._plan.deletions)

    def __iter__(self) -> Iterator[Step]:
        plan, source = self._plan, self._run.source
        yield from self._run.excluded_steps()
        # Values are read only for the fingerprints of a state, and dropped at once.
        targets = source.specs() if plan.state is not None else source.targets()
        yield from map(_without_value, plan.steps(targets))


@dataclass(frozen=True, slots=True)
class PlannedSteps:
    """What :func:`plan_secrets` found: one step per secret (no values; read as iterated), and
    why the listing was cut short, if it was."""

    steps: PlanSteps
    aborted: str | None
    stopped: str | None = None


async def plan_secrets(
    source: Source,
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    state: PathLike | None = None,
    only_failed: PathLike | None = None,
    hints: Hints | None = None,
    clock: Clock = SYSTEM_CLOCK,
    stop_when: Callable[[], Awaitable[str]] | None = None,
    observer: Observer = QUIET,
) -> PlannedSteps:
    """List every account and decide what :func:`apply_secrets` would do; write nothing."""
    run = _Run(
        source,
        credentials=credentials,
        options=options,
        state=state,
        only_failed=only_failed,
        hints=hints,
        clock=clock,
        stop_when=stop_when,
        observer=observer,
    )
    async with run:
        plan = await run.plan()
    return PlannedSteps(PlanSteps(plan, run), plan.aborted, plan.stopped)


async def verify_secrets(
    source: Source,
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    clock: Clock = SYSTEM_CLOCK,
    stop_when: Callable[[], Awaitable[str]] | None = None,
    observer: Observer = QUIET,
) -> Drift:
    """List every account and compare what it holds with the source, by name (values cannot
    be read back)."""
    run = _Run(
        source,
        credentials=credentials,
        options=options,
        clock=clock,
        stop_when=stop_when,
        observer=observer,
    )
    async with run:
        plan = await run.plan()
    return drift(plan, run.source.targets)


def apply(
    source: Source,
    *,
    credentials: Credentials,
    options: ApplyOptions | None = None,
    report: PathLike | None = None,
    state: PathLike | None = None,
    only_failed: PathLike | None = None,
    confirm: Callable[[Plan], bool] | None = None,
) -> Summary:
    """:func:`apply_secrets` for code that is not async: runs it on an event loop of its own.
    ``confirm`` here is a plain function, called in a worker thread."""

    async def confirmed(plan: Plan) -> bool:
        assert confirm is not None
        return await anyio.to_thread.run_sync(confirm, plan)

    return run_blocking(
        functools.partial(
            apply_secrets,
            source,
            credentials=credentials,
            options=options,
            report=report,
            state=state,
            only_failed=only_failed,
            confirm=None if confirm is None else confirmed,
        )
    )


# anyio imports its asyncio backend when a loop first starts (see run_blocking). The module is
# anyio's own, not its API: should a release move it, the import is merely not done early.
with contextlib.suppress(ImportError):
    import anyio._backends._asyncio


def run_blocking(function: Callable[[], Awaitable[T]]) -> T:
    """Run ``function()`` to its end on a new event loop: asyncio (aiohttp needs it), on uvloop
    when it is installed (a dependency wherever it builds: not on Windows).

    anyio imports its asyncio backend when a loop first starts: inside a run's own time,
    whose clock starts at the manifests. This module imports it up front, with the rest.

    ``BULK_SECRETS_LOOP`` forces the loop: ``asyncio`` (asyncio's own) or ``uvloop``; unset
    or empty, uvloop when installed. Any other value, or ``uvloop`` when it is not installed,
    is a :class:`UsageError`, raised before the loop starts."""
    choice = os.environ.get("BULK_SECRETS_LOOP", "").strip().lower()
    if choice not in ("", "asyncio", "uvloop"):
        raise UsageError(f"BULK_SECRETS_LOOP must be asyncio or uvloop, not {choice!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise UsageError("BULK_SECRETS_LOOP is uvloop, but uvloop is not installed")
    use_uvloop = installed if not choice else choice == "uvloop"
    return anyio.run(function, backend="asyncio", backend_options={"use_uvloop": use_uvloop})


def _source(source: Source) -> SecretSource:
    return SpecList(source) if isinstance(source, Sequence) else source


def _without_value(step: Step) -> Step:
    target = step.target
    if not isinstance(target, SecretSpec):
        return step
    bare = Target(
        account=target.account,
        key_name=target.key_name,
        secret_id=target.secret_id,
        location=target.location,
        source=target.source,
    )
    return Step(target=bare, action=step.action, outcome=step.outcome, reason=step.reason)


class _Run:
    """One run's parts over one keep-alive client session: plan, then execute or abandon."""

    def __init__(
        self,
        source: Source,
        *,
        credentials: Credentials,
        options: ApplyOptions | None,
        state: PathLike | None = None,
        only_failed: PathLike | None = None,
        hints: Hints | None = None,
        clock: Clock,
        stop_when: Callable[[], Awaitable[str]] | None = None,
        observer: Observer = QUIET,
    ) -> None:
        self.source = source = _source(source)
        self._observer = observer
        self._options = options = options or ApplyOptions()
        self._state = None if state is None else State(Path(state), credentials)
        self._done = None if only_failed is None else read_done(Path(only_failed)).keys
        self._client = SecretsClient(
            options.base_url,
            credentials,
            connections=options.concurrency,
            timeout=options.timeout,
            ca_bundle=options.ca_bundle,
        )
        self._retry = RetryPolicy(options.retry, sleep=clock.sleep)
        self._rates = Rates(
            options.max_rps, max_wait=options.max_wait, clock=clock.now, sleep=clock.sleep
        )
        self._stops = Stops(source.accounts(), key_of=credentials.for_account)
        self._ends_at: float | None = None  # the deadline, on anyio's clock
        self._stop_when = stop_when
        self._policy = Policy(options.on_existing, hints)
        self._summary = Summary(started=source.started)
        self._summary.shard = None if source.shard is None else str(source.shard)

    async def __aenter__(self) -> Self:
        if self._options.deadline is not None:
            self._ends_at = anyio.current_time() + self._options.deadline
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
    def prunes(self) -> bool:
        return self._options.prune

    async def plan(self, *, list_first: bool = True) -> Plan:
        """The plan; nothing is written. ``list_first``: list every target account now and
        plan the deletions; else each account is listed when the run meets it."""
        plan = Plan(self._options, self._policy, {}, done=self._done, state=self._state)
        if list_first:
            accounts = self.source.accounts()
            self._observer.listing(len(accounts))
            async with self.bounded():
                await list_accounts(
                    self._client,
                    accounts,
                    retry=self._retry,
                    rates=self._rates,
                    stops=self._stops,
                    plan=plan,
                    observer=self._observer,
                )
            plan.aborted, plan.stopped = self._stops.aborted, self._stops.stopped
            plan.plan_deletions(self.source.targets())
        if self._done:
            held = sum((t.account, t.secret_id) in self._done for t in self.source.targets())
            plan.done_unheld = len(self._done) - held
        self.source.verify_unchanged()
        return plan

    async def confirm(self, plan: Plan, confirm: Callable[[Plan], Awaitable[bool]] | None) -> bool:
        """Whether the plan may be carried out: ``confirm`` is asked when it deletes; a run
        that must stop meanwhile is not confirmed."""
        if not plan.to_delete or plan.stopped or confirm is None:
            return not self.stopped
        answer = False
        async with self.bounded():
            answer = await confirm(plan)
        return answer and not self.stopped

    def abandon(self, sink: ReportSink, reason: str) -> Summary:
        """Report every secret as not attempted, for a run stopped before it wrote anything."""
        for target in self.source.excluded():
            skipped = Result.of(
                target, action=Action.SKIP, status=Status.SKIPPED, error=NOT_TARGETED
            )
            self._add(sink, skipped)
        for target in self.source.targets():
            self._add(
                sink,
                Result.of(target, action=Action.CREATE, status=Status.NOT_ATTEMPTED, error=reason),
            )
        return self._finish(sink)

    async def execute(self, plan: Plan, sink: ReportSink) -> Summary:
        """Carry out the plan. Every secret ends as one result in ``sink``, which is finished
        even when the run is interrupted."""
        runner = Runner(
            self._client,
            workers=self._options.concurrency,
            policy=self._policy,
            stops=self._stops,
            retry=self._retry,
            rates=self._rates,
            sink=sink,
            summary=self._summary,
            state=self._state,
            observer=self._observer,
        )
        source = self.source
        self._observer.applying(source.count + source.excluded_count + len(plan.deletions))
        try:
            async with self.bounded():
                await runner.execute(self._items(plan), plan=plan, expected=source.per_account())
        finally:
            if self._state is not None:
                try:
                    self._state.save()
                except StateSaveFailed as exc:  # the state file stays as it was: said below
                    self._stops.stop(str(exc))
            self._finish(sink)
        return self._summary

    @asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """The block, cancelled when the run must stop (its deadline passed, or ``stop_when``
        returned a reason), after ``stops`` is told why, so that what was in flight and what
        was left say so. Once stopped, a block is not entered at all."""
        if self._stops.stopped:
            with anyio.CancelScope() as scope:
                scope.cancel()
                yield
            return
        waits: list[Callable[[], Awaitable[str]]] = []
        if self._ends_at is not None:
            waits.append(self._deadline)
        if self._stop_when is not None:
            waits.append(self._stop_when)
        if not waits:
            yield
            return
        failure: Exception | None = None
        async with anyio.create_task_group() as group:

            async def watch(until: Callable[[], Awaitable[str]]) -> None:
                self._stops.stop(await until())
                group.cancel_scope.cancel()

            for wait in waits:
                group.start_soon(watch, wait)
            try:
                yield
            except Exception as exc:  # raised as it is, not in the task group's ExceptionGroup
                failure = exc
            finally:
                group.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _deadline(self) -> str:
        assert self._ends_at is not None
        await anyio.sleep_until(self._ends_at)
        return f"{DEADLINE} ({self._options.deadline:g}s)"

    @property
    def stopped(self) -> str | None:
        return self._stops.stopped

    def _items(self, plan: Plan) -> Iterator[Step | SecretSpec]:
        """What the runner carries out: the specs (decided once their account is listed), then
        the deletions. When the source fails mid-run (a manifest or a value file that changed,
        a bug), the secret at hand fails with the reason and the rest are settled not
        attempted, so the report still names every secret once."""
        yield from self.excluded_steps()
        position = 0
        try:
            for spec in self.source.specs():
                yield spec
                position += 1
        except Exception as exc:
            reason = str(exc) if isinstance(exc, BulkSecretsError) else internal_error(exc)
            self._stops.stop(reason)
            yield from self._unreached(plan, position, reason)
            return
        yield from plan.deletions

    def excluded_steps(self) -> Iterator[Step]:
        """The source's secrets for accounts this run does not target, settled skipped."""
        for target in self.source.excluded():
            yield Step.settled(target, Action.SKIP, Status.SKIPPED, NOT_TARGETED)

    def _unreached(self, plan: Plan, position: int, reason: str) -> Iterator[Step]:
        targets = itertools.islice(self.source.targets(), position, None)
        outcome = Status.FAILED  # the secret at hand; then the rest
        try:
            for target in targets:
                yield Step.settled(target, Action.CREATE, outcome, reason)
                outcome = Status.NOT_ATTEMPTED
        except BulkSecretsError:
            pass  # the source cannot even be named again: what was reported stands
        for step in plan.deletions:
            yield Step.settled(step.target, Action.DELETE, Status.NOT_ATTEMPTED, reason)

    def _add(self, sink: ReportSink, result: Result) -> None:
        self._summary.add(result)
        with contextlib.suppress(ReportWriteFailed):  # finish() raises it again
            sink.write(result)

    def _finish(self, sink: ReportSink) -> Summary:
        summary = self._summary
        summary.aborted = self._stops.aborted
        summary.stopped = self._stops.stopped
        summary.requests = self._client.requests_sent
        summary.retries = self._retry.retries
        summary.stopped_accounts = self._stops.stopped_accounts()
        summary.finished = summary.started + summary.duration
        try:
            sink.finish(summary)
        except ReportWriteFailed as exc:  # the run's results stand; its report does not
            summary.stopped = summary.stopped or str(exc)
            summary.report_complete = False
        return summary
