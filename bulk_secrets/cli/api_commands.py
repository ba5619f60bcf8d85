"""``apply``, ``plan`` and ``verify``: options in, one library call, output out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import shlex
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import anyio

from ..errors import UsageError
from ..firectl_config import read_firectl_config
from ..manifest import ManifestSet
from ..options import DEFAULT_BASE_URL, ApplyOptions, OnExisting, RetryOptions
from ..planner import Plan
from ..policy import Hints, Why
from ..provision import (
    apply_secrets,
    credentials_for,
    plan_secrets,
    run_blocking,
    verify_secrets,
)
from ..sandbox import sandbox
from .output import (
    ask,
    counted,
    exit_code_of_drift,
    exit_code_of_plan,
    print_summary,
    safe_fields,
    say,
    show_drift,
    show_plan,
)
from .progress import progress_for

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(args: argparse.Namespace, manifests: ManifestSet) -> int:
    options = options_from(args)
    signals = _Signals()
    signals.install()
    return run_blocking(functools.partial(_run, args, manifests, options, signals))


def options_from(args: argparse.Namespace) -> ApplyOptions:
    """The run's settings from the flags; the base URL from the flag, else the environment."""
    return ApplyOptions(
        base_url=args.base_url or os.environ.get("FIREWORKS_BASE_URL") or DEFAULT_BASE_URL,
        concurrency=args.concurrency,
        max_rps=args.max_rps,
        timeout=args.timeout,
        retry=RetryOptions(retries=args.retries),
        on_existing=OnExisting(args.on_existing),
        prune=args.prune,
        keep=tuple(args.keep),
        max_wait=args.max_wait,
        deadline=args.deadline,
        ca_bundle=args.ca_bundle,
    )


async def _run(
    args: argparse.Namespace, manifests: ManifestSet, options: ApplyOptions, signals: _Signals
) -> int:
    """The command, stopped by SIGINT, SIGTERM or SIGHUP as its deadline would stop it, so
    that it still finishes its report; then exit 128 + the signal's number."""
    signals.attach(asyncio.get_running_loop())
    code = await _command(args, manifests, options, signals.wait)
    return code if signals.first is None else 128 + signals.first


class _Signals:
    """The first of SIGINT, SIGTERM and SIGHUP stops the run; a later one is noted, and the
    wind-down goes on. The handlers are Python's own, kept until the process ends (an event
    loop's would be taken down with it, and a late signal would then cut the ending short);
    they hand each signal to the loop with ``call_soon_threadsafe``, the one call a signal
    handler may make into asyncio."""

    def __init__(self) -> None:
        self.first: signal.Signals | None = None
        self._came: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # where signals are handled
            for signum in STOPPING:
                signal.signal(signum, self._note)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand signals to ``loop`` from now on (called in it)."""
        self._came = anyio.Event()
        self._loop = loop
        if self.first is not None:  # it came before the loop ran
            self._noted(self.first, first=True)

    def _note(self, signum: int, frame: object) -> None:
        first = self.first is None
        if first:
            self.first = signal.Signals(signum)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run has ended
                self._loop.call_soon_threadsafe(self._noted, signal.Signals(signum), first)

    def _noted(self, signum: signal.Signals, first: bool) -> None:
        if first:
            say(
                f"{signum.name}: stopping; the report is being finished",
                event="signal",
                level="warning",
                signal=signum.name,
            )
            assert self._came is not None
            self._came.set()
        else:
            say(
                f"{signum.name}: already stopping; the report is being finished",
                event="signal",
                level="warning",
                signal=signum.name,
            )

    async def wait(self) -> str:
        assert self._came is not None
        await self._came.wait()
        assert self.first is not None
        return f"interrupted by {self.first.name}"


async def _command(
    args: argparse.Namespace,
    manifests: ManifestSet,
    options: ApplyOptions,
    stop_when: Callable[[], Awaitable[str]],
) -> int:
    as_json = args.output == "json"
    observer = progress_for(args.progress)  # a usage error before anything starts
    async with AsyncExitStack() as stack:
        if args.sandbox:
            base_url, credentials = await stack.enter_async_context(sandbox())
            options = dataclasses.replace(options, base_url=base_url)
            say(
                f"sandbox: using the built-in emulator at {base_url} "
                "with a throwaway key; nothing leaves this machine",
                event="sandbox",
                baseUrl=base_url,
            )
        else:
            credentials = credentials_for(manifests, firectl=read_firectl_config(args.profile))
        accounts = len(manifests.accounts())
        listed = f"listing {counted(accounts, 'account')} at {options.base_url}"
        if args.command == "apply" and not (args.dry_run or options.prune):
            listed = (  # no list first: each account as its first secret comes up
                f"{counted(accounts, 'account')} at {options.base_url}, "
                "each listed as the run reaches it"
            )
        say(
            listed,
            event="listing",
            accounts=accounts,
            baseUrl=options.base_url,
        )
        if args.command == "verify":
            with observer:
                found = await verify_secrets(
                    manifests,
                    credentials=credentials,
                    options=options,
                    stop_when=stop_when,
                    observer=observer,
                )
            show_drift(found, as_json=as_json)
            return exit_code_of_drift(found)
        hints = _hints(args)
        if args.dry_run:  # plan, or apply --dry-run
            with observer:
                planned = await plan_secrets(
                    manifests,
                    credentials=credentials,
                    options=options,
                    state=args.state,
                    only_failed=args.only_failed,
                    hints=hints,
                    stop_when=stop_when,
                    observer=observer,
                )
            return exit_code_of_plan(planned, show_plan(planned.steps, as_json=as_json))

        def applying(plan: Plan) -> None:
            if plan.done_unheld:
                say(
                    f"{counted(plan.done_unheld, 'secret')} that {args.only_failed} shows done "
                    "are not in these manifests: is it the report of other manifests?",
                    event="done_not_in_manifests",
                    level="warning",
                    count=plan.done_unheld,
                )
            say(
                f"applying {counted(manifests.count, 'secret')} at {options.base_url}",
                event="applying",
                secrets=manifests.count,
                baseUrl=options.base_url,
            )

        with observer:
            summary = await apply_secrets(
                manifests,
                credentials=credentials,
                options=options,
                report=args.report,
                state=args.state,
                only_failed=args.only_failed,
                confirm=functools.partial(_confirm, yes=args.yes),
                on_planned=applying,
                hints=hints,
                stop_when=stop_when,
                observer=observer,
            )
    return print_summary(summary, as_json=as_json, report=args.report, again=_again(args))


def _again(args: argparse.Namespace) -> str:
    """How to run again only what is left: the same command, with ``--only-failed REPORT``."""
    if args.report is None:
        return "to run again only what is left next time, give the run a --report"
    argv: list[str] = []
    skip = False
    for arg in args.argv:
        if skip:
            skip = False
        elif arg == "--only-failed":
            skip = True
        elif not arg.startswith("--only-failed="):
            argv.append(arg)
    return "to run again only what is left: " + shlex.join(
        ["bulk-secrets", *argv, "--only-failed", str(args.report)]
    )


def _hints(args: argparse.Namespace) -> Hints:
    """The flag behind each reason the library gives, for the report and the terminal."""
    return {
        Why.EXISTS: f"--on-existing {args.on_existing}",
        Why.DONE_EARLIER: "--only-failed",
        Why.UNCHANGED: "--state",
    }


async def _confirm(plan: Plan, *, yes: bool) -> bool:
    deletions = plan.to_delete
    say(
        f"--prune will delete {counted(len(deletions), 'secret')}:",
        event="prune",
        level="warning",
        always=not yes,  # asked on a terminal: shown under --quiet too
        count=len(deletions),
    )
    for step in deletions:
        key_name, secret_id, _ = safe_fields(step.target)
        say(
            f"  - {step.target.account}  {key_name} ({secret_id})",
            event="deletion",
            level="warning",
            always=not yes,
            account=step.target.account,
            keyName=key_name,
            secretId=secret_id,
        )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("pass --yes to confirm the deletions: there is no terminal to ask on")
    these = "this" if len(deletions) == 1 else "these"
    ask(f"Delete {these} {counted(len(deletions), 'secret')}? [y/N] ")
    # Waiting for the line without a thread, so that a signal ends the wait at once.
    await anyio.wait_readable(sys.stdin.fileno())
    answer = os.read(sys.stdin.fileno(), 4096).decode("utf-8", "replace")
    return answer.strip().lower() in ("y", "yes")
