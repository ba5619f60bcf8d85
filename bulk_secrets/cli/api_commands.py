"""``apply``, ``plan`` and ``verify``: options in, one library call, output out."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from contextlib import AsyncExitStack

import anyio

from ..errors import UsageError
from ..manifest import ManifestSet
from ..options import ApplyOptions, OnExisting, RetryOptions
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
    exit_code_of_drift,
    exit_code_of_plan,
    print_summary,
    safe_fields,
    say,
    show_drift,
    show_plan,
)


def run(args: argparse.Namespace, manifests: ManifestSet) -> int:
    options = ApplyOptions(
        base_url=args.base_url,
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
    return run_blocking(functools.partial(_run, args, manifests, options))


async def _run(args: argparse.Namespace, manifests: ManifestSet, options: ApplyOptions) -> int:
    as_json = args.output == "json"
    async with AsyncExitStack() as stack:
        if args.sandbox:
            base_url, credentials = await stack.enter_async_context(sandbox())
            options = dataclasses.replace(options, base_url=base_url)
            say(
                f"sandbox: using the built-in emulator at {base_url} "
                "with a throwaway key; nothing leaves this machine"
            )
        else:
            credentials = credentials_for(manifests)
        say(f"listing {len(manifests.accounts())} account(s) at {options.base_url}")
        if args.command == "verify":
            found = await verify_secrets(manifests, credentials=credentials, options=options)
            show_drift(found, as_json=as_json)
            return exit_code_of_drift(found)
        hints = _hints(args)
        if args.dry_run:  # plan, or apply --dry-run
            planned = await plan_secrets(
                manifests,
                credentials=credentials,
                options=options,
                state=args.state,
                only_failed=args.only_failed,
                hints=hints,
            )
            return exit_code_of_plan(planned, show_plan(planned.steps, as_json=as_json))

        def applying(plan: Plan) -> None:
            say(f"applying {manifests.count} secrets at {options.base_url}")

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
        )
    return print_summary(summary, as_json=as_json)


def _hints(args: argparse.Namespace) -> Hints:
    """The flag behind each reason the library gives, for the report and the terminal."""
    return {
        Why.EXISTS: f"--on-existing {args.on_existing}",
        Why.DONE_EARLIER: "--only-failed",
        Why.UNCHANGED: "--state",
    }


async def _confirm(plan: Plan, *, yes: bool) -> bool:
    deletions = plan.to_delete
    say(f"--prune will delete {len(deletions)} secret(s):")
    for step in deletions:
        key_name, secret_id, _ = safe_fields(step.target)
        say(f"  - {step.target.account}  {key_name} ({secret_id})")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("pass --yes to confirm the deletions: there is no terminal to ask on")
    sys.stderr.write(f"Delete these {len(deletions)} secret(s)? [y/N] ")
    sys.stderr.flush()
    answer = await anyio.to_thread.run_sync(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")
