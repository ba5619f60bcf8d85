"""``bulk-secrets report REPORT...``: reports merged into one (shards, or a run and its reruns),
one result per secret, the later report winning; each account's counts, the failures, a total,
and exit 1 when anything is left to do."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..merge import Merged, merge_reports, write_merged
from ..models import Status
from ..report import check_report_path, counted, json_line
from . import logs
from .output import EXIT_FAILED, EXIT_OK, FAILURES_SHOWN, printable, say, say_failures

Adder = Callable[[argparse.ArgumentParser], None]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], *more: Adder) -> None:
    """The ``report`` command, with ``more`` arguments it shares with the others."""
    report = commands.add_parser(
        "report",
        help="merge reports (of shards, or of a run and its reruns) and show what is left",
        description="Merge reports into one result per secret (account and secretId): a "
        "secret in more than one report takes the later report's result, in the order given. "
        "Prints each account's counts and the failures; exits 1 when a secret failed or was "
        "not attempted.",
    )
    report.add_argument(
        "reports",
        nargs="+",
        type=Path,
        metavar="REPORT",
        help="a .json, .jsonl or .csv report, finished or left by a killed run (for a JSON "
        "report, its REPORT.json.partial when that run did not finish)",
    )
    report.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help='json: print the merged report on stdout, {"summary": ..., "results": [...]} '
        "(default: %(default)s)",
    )
    report.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="write the merged report here (.json, .jsonl or .csv), put in place when whole",
    )
    logs.add_arguments(report)
    for add in more:
        add(report)
    report.set_defaults(sandbox=False)  # what the shared flag checks read


def run(args: argparse.Namespace) -> int:
    if args.write is not None:
        check_report_path(args.write)  # before reading anything
    merged = merge_reports(args.reports)
    if args.write is not None:
        write_merged(merged, args.write)
    return show(merged, as_json=args.output == "json", written=args.write)


def show(merged: Merged, *, as_json: bool, written: Path | None = None) -> int:
    """Each account's counts (a table on stdout, or with ``as_json`` the merged report), and on
    stderr the secrets in more than one report, the first failures and a total. Returns the
    exit code: 1 when a secret failed or was not attempted."""
    code = EXIT_OK if merged.all_done else EXIT_FAILED
    loud = code != EXIT_OK  # written under --quiet too
    if merged.repeated:
        verb = "appears" if merged.repeated == 1 else "appear"
        say(
            f"{counted(merged.repeated, 'secret')} {verb} in more than one report; "
            "the later one counts",
            event="repeated",
            count=merged.repeated,
        )
    if as_json:
        _print_json(merged)
    else:
        _print_accounts(merged)
    summary = merged.summary()
    failed = summary.count(Status.FAILED)
    shown = summary.first_failures[:FAILURES_SHOWN]
    say_failures(shown, failed, where="secretId", see="--output json or --write")
    if written is not None:
        say(f"wrote {written}", event="written", path=str(written))
    parts = ", ".join(
        f"{summary.count(status)} {status.value.replace('_', ' ')}" for status in Status
    )
    say(
        f"{counted(summary.total, 'secret')} in {counted(len(summary.by_account), 'account')} "
        f"from {counted(len(merged.sources), 'report')}: {parts}",
        event="summary",
        level="info" if code == EXIT_OK else "warning",
        always=loud,
        **merged.summary_record(),
    )
    return code


def _print_json(merged: Merged) -> None:
    """The merged report, as a JSON report is written: the summary, then a result a line."""
    out = sys.stdout
    out.write('{"summary": ' + json.dumps(merged.summary_record()) + ',\n"results": [')
    separator = "\n"
    for result in merged.results():
        out.write(separator + json_line(result))
        separator = ",\n"
    out.write("\n]}\n")
    out.flush()


def _print_accounts(merged: Merged) -> None:
    by_account = merged.summary().by_account
    table: list[tuple[str, ...]] = [("ACCOUNT", "SUCCEEDED", "FAILED", "SKIPPED", "NOT ATTEMPTED")]
    for account, counts in sorted(by_account.items()):
        table.append(
            (
                printable(account, field=True),
                *(str(counts[status.value]) for status in Status),
            )
        )
    if len(table) == 1:
        return
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
