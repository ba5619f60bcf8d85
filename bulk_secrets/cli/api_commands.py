"""``apply``, ``plan`` and ``verify``: the commands that talk to the API, over one session."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from contextlib import AsyncExitStack

import anyio

from ..errors import UsageError
from ..manifest import ManifestSet
from ..models import Credentials, SecretValue, Status
from ..options import ApplyOptions, OnExisting, RetryOptions
from ..planner import Plan, drift
from ..provision import Provisioner
from ..report import check_report_path, open_report, read_done
from ..state import State
from .emulator_command import SANDBOX_KEY
from .output import (
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_OK,
    counts_line,
    loop_options,
    print_drift,
    print_plan,
    say,
)


def run(args: argparse.Namespace, manifests: ManifestSet, started: float) -> int:
    """``started``: when the command began reading the manifests, so that the summary's
    duration covers the whole run, manifests included."""
    options = ApplyOptions(
        base_url=args.base_url,
        concurrency=args.concurrency,
        max_rps=args.max_rps,
        timeout=args.timeout,
        retry=RetryOptions(retries=args.retries),
        on_existing=OnExisting(args.on_existing),
        prune=args.prune,
        keep=tuple(args.keep),
    )
    check_report_path(args.report)
    code: int = anyio.run(_run, args, manifests, options, started, backend_options=loop_options())
    return code


async def _run(
    args: argparse.Namespace, manifests: ManifestSet, options: ApplyOptions, started: float
) -> int:
    async with AsyncExitStack() as stack:
        if args.sandbox:
            from .. import emulator  # loads aiohttp.web only when it is used

            config = emulator.EmulatorConfig(keys={SANDBOX_KEY: None})
            server = await stack.enter_async_context(emulator.running_emulator(config))
            options = dataclasses.replace(options, base_url=server.base_url)
            say(
                f"sandbox: using the built-in emulator at {server.base_url} "
                "with a throwaway key; nothing leaves this machine"
            )
        credentials = _credentials(manifests, sandbox=args.sandbox)
        state = None if args.state is None else State(args.state, credentials)
        done = None if args.only_failed is None else read_done(args.only_failed)
        provisioner = await stack.enter_async_context(
            Provisioner(
                manifests,
                credentials=credentials,
                options=options,
                state=state,
                done=done,
                started=started,
            )
        )
        accounts = manifests.accounts()
        say(f"listing {len(accounts)} account(s) at {options.base_url}")
        as_json = args.output == "json"
        if args.command == "verify":
            return _verify(await provisioner.plan(), manifests, as_json=as_json)
        if args.dry_run:  # plan, or apply --dry-run
            return _show_plan(await provisioner.plan(), manifests, as_json=as_json)
        report = open_report(args.report)
        try:
            plan = await provisioner.plan()
            if plan.deletions and not await _confirm(plan, yes=args.yes):
                raise UsageError("the deletions were not confirmed; nothing was changed")
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, anyio.get_cancelled_exc_class()) else exc
            provisioner.abandon(report, f"stopped before any write: {reason}")
            raise
        say(f"applying {manifests.count} secrets at {options.base_url}")
        summary = await provisioner.execute(plan, report)
    for failure in summary.first_failures:
        say(f"failed: {failure.account} {failure.key_name} ({failure.location}): {failure.error}")
    failed = summary.count(Status.FAILED)
    if failed > len(summary.first_failures):
        say(f"... and {failed - len(summary.first_failures)} more failed: see --report")
    say(summary.line())
    if as_json:
        print(json.dumps(summary.to_record(), indent=2))
    if summary.aborted:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


def _show_plan(plan: Plan, manifests: ManifestSet, *, as_json: bool) -> int:
    steps = list(plan.steps(manifests.specs()))
    counts = print_plan(steps, as_json=as_json)
    say(f"plan: {counts_line(counts)}; nothing was written")
    if plan.aborted:
        return EXIT_ABORTED
    return EXIT_FAILED if counts["unreachable"] or counts["fail"] else EXIT_OK


def _verify(plan: Plan, manifests: ManifestSet, *, as_json: bool) -> int:
    found = drift(plan, manifests.targets)
    print_drift(found, as_json=as_json)
    say(
        f"verify: {len(found.missing)} missing, {len(found.renamed)} with another keyName, "
        f"{len(found.unexpected)} unexpected, {len(found.unreachable)} account(s) unreachable. "
        "Values cannot be read back from the API, so only names were checked."
    )
    if plan.aborted:
        return EXIT_ABORTED
    return EXIT_OK if found.clean else EXIT_FAILED


async def _confirm(plan: Plan, *, yes: bool) -> bool:
    say(f"--prune will delete {len(plan.deletions)} secret(s):")
    for step in plan.deletions:
        say(f"  - {step.account}  {step.key_name} ({step.secret_id})")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("pass --yes to confirm the deletions: there is no terminal to ask on")
    sys.stderr.write(f"Delete these {len(plan.deletions)} secret(s)? [y/N] ")
    sys.stderr.flush()
    answer = await anyio.to_thread.run_sync(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


def _credentials(manifests: ManifestSet, *, sandbox: bool) -> Credentials:
    if sandbox:
        return Credentials(SecretValue(SANDBOX_KEY))
    per_account: dict[str, SecretValue] = {}
    named: dict[str, str] = {}
    for manifest in manifests:
        for account, var in manifest.api_keys.items():
            if named.setdefault(account, var) != var:
                raise UsageError(
                    f"two API keys for account {account!r}: {named[account]} and {var} "
                    f"({manifest.name}); name one"
                )
            per_account[account] = SecretValue(os.environ[var])
    key = os.environ.get("FIREWORKS_API_KEY")
    if not key:
        missing = sorted(set(manifests.accounts()) - per_account.keys())
        if missing:
            raise UsageError(
                "no API key: set FIREWORKS_API_KEY (or use --sandbox to try it out); "
                f"accounts without a key of their own: {', '.join(missing[:5])}"
            )
    return Credentials(SecretValue(key) if key else None, per_account or None)
