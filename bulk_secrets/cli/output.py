"""What the CLI's commands print: exit codes, stderr messages with the flag that helps, plans,
drift and summaries as text or JSON."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from typing import Any

from ..models import Status, Step, Target
from ..planner import Drift
from ..provision import PlannedSteps
from ..report import Summary

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

ACCOUNTS_NAMED = 20  # accounts named on stderr with why they stopped, at most
_MARKS = {"create": "+", "update": "~", "delete": "-", "skip": "=", "fail": "!", "unreachable": "?"}
# The library says what happened; the CLI adds the flag that helps.
_HINTS = {
    "no target account": "pass --account or --accounts-file, or set FIREWORKS_ACCOUNT_ID",
    "no API key": "or use --sandbox to try it out",
    "name its format": "pass --format",
    "over the limit of": "raise --max-value-size for larger values",
    "got no answer within": "raise --timeout if the server is slow, not gone",
}


# What must not reach a terminal raw from a server or a manifest: C0 controls (ESC starts the
# ANSI sequences), DEL, C1, and the bidirectional overrides that reorder what is shown.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_TEXT = re.compile(f"[{_UNSAFE}]")
_UNSAFE_IN_FIELD = re.compile(f"[{_UNSAFE}\t\n]")


def printable(text: str, *, field: bool = False) -> str:
    """``text`` with every control character written as an escape (``\x1b``); a ``field``
    (one name, id or reason) keeps no newline or tab either, so it cannot fake a line."""
    pattern = _UNSAFE_IN_FIELD if field else _UNSAFE_IN_TEXT
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def say(text: str) -> None:
    print(f"bulk-secrets: {printable(text)}", file=sys.stderr, flush=True)


def with_hint(message: str) -> str:
    """The message, and a line naming the flag that helps, if one does."""
    return "\n".join([message, *(f"hint: {hint}" for hint in _hints(message))])


def _hints(message: str) -> list[str]:
    return [hint for words, hint in _HINTS.items() if words in message]


def print_summary(summary: Summary, *, as_json: bool) -> int:
    """The accounts that stopped (each once, with why), the first failures and the summary on
    stderr (and as JSON on stdout); the exit code."""
    stopped = list(summary.stopped_accounts.items())
    for account, why in stopped[:ACCOUNTS_NAMED]:
        say(f"account {account}: {printable(why, field=True)}")
    if len(stopped) > ACCOUNTS_NAMED:
        say(f"... and {len(stopped) - ACCOUNTS_NAMED} more accounts stopped: see --report")
    for failure in summary.first_failures:
        error = printable(failure.error or "", field=True)
        say(f"failed: {failure.account} {failure.key_name} ({failure.location}): {error}")
    failed = summary.count(Status.FAILED)
    if failed > len(summary.first_failures):
        say(f"... and {failed - len(summary.first_failures)} more failed: see --report")
    reasons = (failure.error or "" for failure in summary.first_failures)
    for hint in dict.fromkeys(hint for reason in reasons for hint in _hints(reason)):
        say(f"hint: {hint}")
    say(summary.line())
    if as_json:
        print(json.dumps(summary.to_record(), indent=2))
    if summary.aborted:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


def category(step: Step) -> str:
    """What the plan will do with a step: create, update, delete, skip, fail or unreachable."""
    if step.outcome is Status.SKIPPED:
        return "skip"
    if step.outcome is Status.FAILED:
        return "fail"
    if step.outcome is Status.NOT_ATTEMPTED:
        return "unreachable"
    return step.action.value


def _record(target: Target) -> dict[str, Any]:
    return {"keyName": target.key_name, "secretId": target.secret_id, "location": target.location}


def _step_record(step: Step) -> dict[str, Any]:
    record = _record(step.target)
    if step.reason:
        record["reason"] = step.reason
    return record


def plan_record(steps: list[Step]) -> dict[str, Any]:
    accounts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for step in steps:
        by_kind = accounts.setdefault(step.target.account, {})
        by_kind.setdefault(category(step), []).append(_step_record(step))
    counts = Counter(category(step) for step in steps)
    return {"accounts": accounts, "summary": dict(sorted(counts.items()))}


def show_plan(steps: list[Step], *, as_json: bool) -> Counter[str]:
    """Print the plan on stdout and its counts on stderr; return the counts."""
    counts = Counter(category(step) for step in steps)
    if as_json:
        print(json.dumps(plan_record(steps), indent=2))
    else:
        _print_plan(steps, counts)
    say(f"plan: {counts_line(counts)}; nothing was written")
    return counts


def _print_plan(steps: list[Step], counts: Counter[str]) -> None:
    by_account: dict[str, list[Step]] = {}
    for step in steps:
        by_account.setdefault(step.target.account, []).append(step)
    for account, account_steps in by_account.items():
        tally = Counter(category(step) for step in account_steps)
        print(f"{account}: {counts_line(tally)}")
        for step in account_steps:
            kind = category(step)
            key_name, secret_id, location = safe_fields(step.target)
            reason = f"  ({printable(step.reason, field=True)})" if step.reason else ""
            print(f"  {_MARKS[kind]} {kind:<6} {key_name:<32} {secret_id:<34} {location}{reason}")


def exit_code_of_plan(planned: PlannedSteps, counts: Counter[str]) -> int:
    if planned.aborted:
        return EXIT_ABORTED
    return EXIT_FAILED if counts["unreachable"] or counts["fail"] else EXIT_OK


def counts_line(counts: Counter[str]) -> str:
    order = ("create", "update", "delete", "skip", "fail", "unreachable")
    return ", ".join(
        f"{counts[kind]} {kind}" for kind in order if counts[kind] or kind in order[:3]
    )


def show_drift(found: Drift, *, as_json: bool) -> None:
    """Print the drift on stdout, and what was checked on stderr."""
    if as_json:
        print(json.dumps(_drift_record(found), indent=2))
    else:
        _print_drift(found)
    say(
        f"verify: {len(found.missing)} missing, {len(found.renamed)} with another keyName, "
        f"{len(found.unexpected)} unexpected, {len(found.unreachable)} account(s) unreachable. "
        "Values cannot be read back from the API, so only names were checked."
    )


def exit_code_of_drift(found: Drift) -> int:
    if found.aborted:
        return EXIT_ABORTED
    return EXIT_OK if found.clean else EXIT_FAILED


def _drift_record(found: Drift) -> dict[str, Any]:
    return {
        "clean": found.clean,
        "missing": [_record(t) | {"account": t.account} for t in found.missing],
        "renamed": [
            _record(t) | {"account": t.account, "actualKeyName": actual}
            for t, actual in found.renamed
        ],
        "unexpected": [_record(t) | {"account": t.account} for t in found.unexpected],
        "unreachable": found.unreachable,
    }


def safe_fields(target: Target) -> tuple[str, str, str]:
    """A target's keyName, secret id and location, safe to print: any may come from a server."""
    return (
        printable(target.key_name, field=True),
        printable(target.secret_id, field=True),
        printable(target.location, field=True),
    )


def _print_drift(found: Drift) -> None:
    for t in found.missing:
        key_name, secret_id, location = safe_fields(t)
        print(f"missing     {t.account}  {key_name} ({secret_id})  {location}")
    for t, actual in found.renamed:
        key_name, secret_id, location = safe_fields(t)
        print(
            f"renamed     {t.account}  {secret_id}: keyName is {printable(actual, field=True)}, "
            f"the manifest says {key_name}  {location}"
        )
    for t in found.unexpected:
        key_name, secret_id, _ = safe_fields(t)
        print(f"unexpected  {t.account}  {key_name} ({secret_id})")
    for account, why in found.unreachable.items():
        print(f"unreachable {account}: {printable(why, field=True)}")
