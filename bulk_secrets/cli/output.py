"""Shared by the CLI's commands: exit codes, stderr messages, plans and drift as text or JSON,
and the choice of event loop."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from typing import Any

from ..models import Status, Step
from ..planner import Drift

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

_MARKS = {"create": "+", "update": "~", "delete": "-", "skip": "=", "fail": "!", "unreachable": "?"}


def loop_options() -> dict[str, bool]:
    """anyio's asyncio backend options: uvloop when it is installed (the ``fast`` extra)."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


def say(text: str) -> None:
    print(f"bulk-secrets: {text}", file=sys.stderr, flush=True)


def category(step: Step) -> str:
    """What the plan will do with a step: create, update, delete, skip, fail or unreachable."""
    if step.outcome is Status.SKIPPED:
        return "skip"
    if step.outcome is Status.FAILED:
        return "fail"
    if step.outcome is Status.NOT_ATTEMPTED:
        return "unreachable"
    return step.action.value


def _record(step: Step) -> dict[str, Any]:
    record = {"keyName": step.key_name, "secretId": step.secret_id, "location": step.location}
    if step.reason:
        record["reason"] = step.reason
    return record


def plan_record(steps: list[Step]) -> dict[str, Any]:
    accounts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for step in steps:
        accounts.setdefault(step.account, {}).setdefault(category(step), []).append(_record(step))
    counts = Counter(category(step) for step in steps)
    return {"accounts": accounts, "summary": dict(sorted(counts.items()))}


def print_plan(steps: list[Step], *, as_json: bool) -> Counter[str]:
    """Print the plan on stdout; return its counts."""
    counts = Counter(category(step) for step in steps)
    if as_json:
        print(json.dumps(plan_record(steps), indent=2))
        return counts
    by_account: dict[str, list[Step]] = {}
    for step in steps:
        by_account.setdefault(step.account, []).append(step)
    for account, account_steps in by_account.items():
        tally = Counter(category(step) for step in account_steps)
        print(f"{account}: {counts_line(tally)}")
        for step in account_steps:
            kind = category(step)
            reason = f"  ({step.reason})" if step.reason else ""
            print(
                f"  {_MARKS[kind]} {kind:<6} {step.key_name:<32} {step.secret_id:<34}"
                f" {step.location}{reason}"
            )
    return counts


def counts_line(counts: Counter[str]) -> str:
    order = ("create", "update", "delete", "skip", "fail", "unreachable")
    return ", ".join(
        f"{counts[kind]} {kind}" for kind in order if counts[kind] or kind in order[:3]
    )


def print_drift(found: Drift, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "clean": found.clean,
                    "missing": [
                        _record(step) | {"account": step.account} for step in found.missing
                    ],
                    "renamed": [
                        _record(step) | {"account": step.account, "actualKeyName": actual}
                        for step, actual in found.renamed
                    ],
                    "unexpected": [
                        _record(step) | {"account": step.account} for step in found.unexpected
                    ],
                    "unreachable": found.unreachable,
                },
                indent=2,
            )
        )
        return
    for step in found.missing:
        print(f"missing     {step.account}  {step.key_name} ({step.secret_id})  {step.location}")
    for step, actual in found.renamed:
        print(
            f"renamed     {step.account}  {step.secret_id}: keyName is {actual}, "
            f"the manifest says {step.key_name}  {step.location}"
        )
    for step in found.unexpected:
        print(f"unexpected  {step.account}  {step.key_name} ({step.secret_id})")
    for account, why in found.unreachable.items():
        print(f"unreachable {account}: {why}")
