"""What the CLI's commands print: exit codes, stderr messages with the flag that helps, plans,
drift and summaries as text or JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..models import Result, Status, Step, Target
from ..planner import Drift
from ..provision import PlannedSteps
from ..report import Summary
from . import logs
from .logs import Level
from .logs import printable as printable  # the commands import it from here

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

ACCOUNTS_NAMED = 20  # accounts named on stderr with why they stopped, at most
FAILURES_SHOWN = 20  # failures named on stderr as text, at most (a JSON log names all kept)
_MARKS = {"create": "+", "update": "~", "delete": "-", "skip": "=", "fail": "!", "unreachable": "?"}
# The library says what happened; the CLI adds the flag that helps.
_HINTS = {
    "no target account": "pass --account or --accounts-file, or set FIREWORKS_ACCOUNT_ID",
    "no API key": "or use --sandbox to try it out",
    "name its format": "pass --format",
    "over the limit of": "raise --max-value-size for larger values",
    "got no answer within": "raise --timeout if the server is slow, not gone",
}


def say(
    text: str,
    *,
    event: str = "message",
    level: Level = "info",
    always: bool = False,
    **fields: Any,
) -> None:
    """Tell the user ``text`` on stderr, as the event ``event`` with ``fields`` in a JSON log
    (see :mod:`.logs`); control characters in it are escaped. Under ``--quiet`` only an error,
    or what is said ``always``, is written."""
    logs.emit(event, text, level=level, always=always, **fields)


def ask(question: str) -> None:
    """Ask on stderr, with no newline, pausing a live progress display (see :func:`logs.ask`)."""
    logs.ask(question)


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 secret``, ``2 secrets``; ``plural`` where adding ``s`` is wrong (``retries``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def with_hint(message: str) -> str:
    """The message, and a line naming the flag that helps, if one does."""
    return "\n".join([message, *(f"hint: {hint}" for hint in _hints(message))])


def _hints(message: str) -> list[str]:
    return [hint for words, hint in _HINTS.items() if words in message]


def print_summary(
    summary: Summary,
    *,
    as_json: bool,
    report: Path | None = None,
    again: str | None = None,
) -> int:
    """The end of a run on stderr: the accounts that stopped (each once, with why), the first
    failures, the flags that help, a line per account (when more than one), the summary, and
    then what to do next (``report`` that could not be written whole, else ``again``, the
    command that runs again what is left); the summary as JSON on stdout too with
    ``as_json``. Returns the exit code.

    Under ``--quiet`` a run where every secret succeeded prints nothing. In a JSON log every
    stopped account and every failure kept is an event, and the summary is the last event."""
    code = _exit_code(summary)
    json_log = logs.settings().json
    loud = code != EXIT_OK  # written under --quiet too
    stopped = list(summary.stopped_accounts.items())
    named = stopped if json_log else stopped[:ACCOUNTS_NAMED]
    for account, why in named:
        say(
            f"account {account}: {printable(why, field=True)}",
            event="account_stopped",
            level="error",
            account=account,
            reason=why,
        )
    if len(stopped) > len(named):
        more = len(stopped) - len(named)
        say(
            f"... and {more} more accounts stopped: see --report",
            event="more_accounts_stopped",
            level="error",
            count=more,
        )
    kept = summary.first_failures
    shown = kept if json_log else kept[:FAILURES_SHOWN]
    say_failures(shown, summary.count(Status.FAILED), where="location", see="--report")
    reasons = (failure.error or "" for failure in shown)
    for hint in dict.fromkeys(hint for reason in reasons for hint in _hints(reason)):
        say(f"hint: {hint}", event="hint", always=loud)
    if not json_log and len(summary.by_account) > 1:
        _say_accounts(summary, loud=loud)
    after: list[tuple[str, str, Level]] = []
    if not summary.report_complete:
        after.append(
            (
                f"the report {report} could not be written whole: make room, then run the "
                "same command again",
                "report_incomplete",
                "error",
            )
        )
    elif loud and again:
        after.append((again, "run_again", "info"))
    if json_log:  # the summary is the last event
        for text, event, said_as in after:
            say(text, event=event, level=said_as, always=loud)
    level: Level = "info" if code == EXIT_OK else "error" if summary.aborted else "warning"
    record = summary.to_record() | {"byAccount": _by_account(summary)}
    say(summary.line(), event="summary", level=level, always=loud, **record)
    if not json_log:
        for text, event, said_as in after:
            say(text, event=event, level=said_as, always=loud)
    if as_json:
        print(json.dumps(summary_record(summary), indent=2))
    return code


def summary_record(summary: Summary) -> dict[str, Any]:
    """The summary for ``--output json``: its counts, ``byAccount`` (each account's counts
    by status) and ``failures`` (the first kept: account, keyName, secretId, location,
    error)."""
    return summary.to_record() | {
        "byAccount": _by_account(summary),
        "failures": [_failure_record(failure) for failure in summary.first_failures],
    }


def _exit_code(summary: Summary) -> int:
    if summary.aborted:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


def _by_account(summary: Summary) -> dict[str, dict[str, int]]:
    names = [status.value for status in Status]  # once: iterating an Enum is slow
    return {
        account: {name: counts[name] for name in names}
        for account, counts in sorted(summary.by_account.items())
    }


def say_failures(shown: Sequence[Result], failed: int, *, where: str, see: str) -> None:
    """Each failure shown (``where``: the field in brackets, ``location`` or ``secretId``),
    then how many more of the ``failed`` there are, and where to see them."""
    for failure in shown:
        fields = _failure_record(failure)  # escaped: a keyName may come from a server
        say(
            f"failed: {fields['account']} {fields['keyName']} ({fields[where]}): {fields['error']}",
            event="failed",
            level="error",
            **fields,
        )
    if failed > len(shown):
        more = failed - len(shown)
        say(
            f"... and {more} more failed: see {see}",
            event="more_failed",
            level="error",
            count=more,
        )


def _failure_record(failure: Result) -> dict[str, Any]:
    return {
        "account": printable(failure.account, field=True),
        "keyName": printable(failure.key_name, field=True),
        "secretId": printable(failure.secret_id, field=True),
        "location": printable(failure.location, field=True),
        "error": printable(failure.error or "", field=True),
    }


def _say_accounts(summary: Summary, *, loud: bool) -> None:
    """A line per account with its counts; past ``ACCOUNTS_NAMED``, those with something
    not done first."""

    by_account = summary.by_account

    def done(account: str) -> bool:
        counts = by_account[account]
        return not (counts[Status.FAILED.value] or counts[Status.NOT_ATTEMPTED.value])

    accounts = sorted(by_account)
    if len(accounts) > ACCOUNTS_NAMED:
        accounts = sorted(sorted(accounts, key=done)[:ACCOUNTS_NAMED])
    for account in accounts:
        counts = by_account[account]
        parts = [
            f"{counts[status.value]} {status.value.replace('_', ' ')}"
            for status in Status
            if counts[status.value] or status is Status.SUCCEEDED
        ]
        say(f"{account}: {', '.join(parts)}", event="account_summary", always=loud)
    more = len(by_account) - len(accounts)
    if more:
        say(
            f"... and {counted(more, 'more account')}: see --output json or --report",
            event="account_summary",
            always=loud,
        )


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


def show_plan(steps: Iterable[Step], *, as_json: bool) -> Counter[str]:
    """Print the plan on stdout as it is read, step by step, and its counts on stderr; return
    the counts. Only the counts are kept: a plan of a million secrets is never held."""
    counts: Counter[str] = Counter()
    by_account: dict[str, Counter[str]] = {}
    if as_json:
        _print_json_plan(steps, counts, by_account)
    else:
        _print_plan(steps, counts, by_account)
    trouble = bool(counts["fail"] or counts["unreachable"])
    say(
        f"plan: {counts_line(counts)}; nothing was written",
        event="plan",
        level="warning" if trouble else "info",
        always=trouble,
        counts=dict(sorted(counts.items())),
    )
    return counts


def _print_plan(
    steps: Iterable[Step], counts: Counter[str], by_account: dict[str, Counter[str]]
) -> None:
    """A line per step, under its account's name (again whenever the account changes), then
    each account's counts when there are several."""
    account = None
    for step in steps:
        kind = category(step)
        counts[kind] += 1
        if step.target.account != account:
            account = step.target.account
            print(f"{account}:")
        tally = by_account.get(account)
        if tally is None:
            tally = by_account[account] = Counter()
        tally[kind] += 1
        key_name, secret_id, location = safe_fields(step.target)
        reason = f"  ({printable(step.reason, field=True)})" if step.reason else ""
        print(f"  {_MARKS[kind]} {kind:<6} {key_name:<32} {secret_id:<34} {location}{reason}")
    if len(by_account) > 1:
        for name, tally in by_account.items():
            print(f"{name}: {counts_line(tally)}")


def _print_json_plan(
    steps: Iterable[Step], counts: Counter[str], by_account: dict[str, Counter[str]]
) -> None:
    """``{"steps": [...], "byAccount": {...}, "summary": {...}}``, written as it is read."""
    print('{\n  "steps": [', end="")
    separator = "\n    "
    for step in steps:
        kind = category(step)
        counts[kind] += 1
        by_account.setdefault(step.target.account, Counter())[kind] += 1
        record = {"account": step.target.account, "plan": kind, **_step_record(step)}
        print(separator, json.dumps(record), sep="", end="")
        separator = ",\n    "
    accounts = {name: dict(sorted(tally.items())) for name, tally in by_account.items()}
    print("\n  ],")
    print(f'  "byAccount": {json.dumps(accounts)},')
    print(f'  "summary": {json.dumps(dict(sorted(counts.items())))}\n}}')


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
        f"{len(found.unexpected)} unexpected, "
        f"{counted(len(found.unreachable), 'account')} unreachable. "
        "Values cannot be read back from the API, so only names were checked.",
        event="verify",
        level="info" if found.clean else "warning",
        always=not found.clean,
        missing=len(found.missing),
        renamed=len(found.renamed),
        unexpected=len(found.unexpected),
        unreachable=len(found.unreachable),
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
