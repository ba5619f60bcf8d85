"""stderr as a log: ``--quiet`` for cron, ``-v`` for each request, ``--log-format json`` for log
shippers; the summary per account, and counts that are grammatical. No value and no API key in
any of it."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bulk_secrets.cli import logs
from bulk_secrets.cli.output import print_summary, say
from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.events import Request
from bulk_secrets.models import Action, Result, Status
from bulk_secrets.report import Summary

from .helpers import ACCOUNT, API_KEY, CANARY, key_for, run_main, write_yaml_manifest

pytestmark = pytest.mark.anyio

LEVELS = {"info", "warning", "error"}


def run_args(manifest: Path, base_url: str, *more: str) -> tuple[str, ...]:
    return ("apply", str(manifest), "--account", ACCOUNT, "--base-url", base_url,
            "--max-rps", "0", *more)  # fmt: skip


def events(err: str) -> list[dict[str, Any]]:
    """Each stderr line as JSON: every one must parse."""
    parsed = [json.loads(line) for line in err.splitlines()]
    for event in parsed:
        assert event["level"] in LEVELS, event
        assert isinstance(event["event"], str) and event["event"], event
        assert isinstance(event["message"], str), event
        when = datetime.fromisoformat(event["time"])
        assert event["time"].endswith("Z") and when.utcoffset() == UTC.utcoffset(None)
    return parsed


def failing(base_url: str) -> tuple[str, ...]:
    return ("--on-existing", "fail", "--base-url", base_url)


# --quiet


async def test_quiet_prints_nothing_when_every_secret_succeeded(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 20)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, out, err = await run_main(*run_args(manifest, server.base_url, "--quiet"))
        assert (code, out, err) == (0, "", "")
        code, out, err = await run_main(*run_args(manifest, server.base_url, "-q", "--dry-run"))
    assert code == 0 and err == ""
    assert "SECRET_00000" in out  # stdout, the plan, is what was asked for


async def test_quiet_prints_the_failures_and_the_summary_otherwise(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 10)
    report = tmp_path / "r.json"
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for i in range(3):
            server.put(ACCOUNT, f"secret-{i:05d}", key_for(i), "old")
        code, _, err = await run_main(
            *run_args(manifest, server.base_url, "-q", "--on-existing", "fail",
                      "--report", str(report))
        )  # fmt: skip
    assert code == 1
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("bulk-secrets: failed: ")] == [
        f"bulk-secrets: failed: {ACCOUNT} {key_for(i)} ({manifest}:{2 * i + 2}): "
        "already exists (--on-existing fail)"
        for i in range(3)
    ]
    assert "bulk-secrets: 10 secrets: 7 succeeded, 3 failed, 0 skipped" in err
    assert "to run again only what is left: " in err
    assert "listing" not in err and "applying" not in err
    assert CANARY not in err


async def test_quiet_prints_errors_always(tmp_path: Path) -> None:
    code, _, err = await run_main("validate", "-q", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert err.startswith("bulk-secrets: ")
    code, _, err = await run_main("validate", "-q", "manifests/example.yaml", "--account", "a")
    assert code == 0 and err == ""


async def test_quiet_and_verbose_are_one_or_the_other() -> None:
    code, _, _ = await run_main("validate", "-q", "-v", "manifests/example.yaml")
    assert code == 2


# -v


REQUEST_LINE = re.compile(
    r"bulk-secrets: (GET|POST|PATCH|DELETE) (\S+) (\S+) (\d{3}|no answer) attempt (\d+) (\d+) ms"
)


async def test_verbose_logs_each_request_without_a_value_or_key(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 30)
    faults = Faults(seed=5, error_rate=0.2)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None}, faults=faults)) as server:
        code, _, err = await run_main(*run_args(manifest, server.base_url, "-v"))
        sent = server.stats.count()
    assert code == 0, err
    requests = [REQUEST_LINE.fullmatch(line) for line in err.splitlines()]
    found = [match.groups() for match in requests if match]
    assert len(found) == sent
    assert {method for method, *_ in found} == {"GET", "POST"}
    assert {account for _, account, *_ in found} == {ACCOUNT}
    writes = [f for f in found if f[0] == "POST"]
    assert {secret_id for _, _, secret_id, *_ in writes} == {f"secret-{i:05d}" for i in range(30)}
    assert [f[2] for f in found if f[0] == "GET"] == ["-"]
    assert any(f[3] != "200" for f in writes)  # the faults answered, each its own line
    assert any(int(f[4]) > 1 for f in writes)  # and the retries
    assert CANARY not in err and API_KEY not in err


def test_a_request_event_has_the_fields_and_nothing_else() -> None:
    err = io.StringIO()
    logs.configure(log_format="json", verbose=True)
    try:
        with redirect_stderr(err):
            logs.RequestLog().request(Request("PATCH", "acct-a", "db-url", None, 2, 0.0426))
            logs.RequestLog().request(Request("GET", "acct-a", "", 200, 1, 0.001))
    finally:
        logs.configure()
    first, second = events(err.getvalue())
    assert {k: v for k, v in first.items() if k != "time"} == {
        "level": "info", "event": "request",
        "message": "PATCH acct-a db-url no answer attempt 2 43 ms",
        "method": "PATCH", "account": "acct-a", "secretId": "db-url", "status": None,
        "attempt": 2, "ms": 43,
    }  # fmt: skip
    assert second["secretId"] is None and second["status"] == 200


# --log-format json


async def test_every_json_line_parses_and_the_summary_is_last(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 12)
    report = tmp_path / "r.json"
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for i in range(2):
            server.put(ACCOUNT, f"secret-{i:05d}", key_for(i), "old")
        code, _, err = await run_main(
            *run_args(manifest, server.base_url, "--log-format", "json", "-v",
                      "--on-existing", "fail", "--report", str(report))
        )  # fmt: skip
    assert code == 1
    told = events(err)
    names = [event["event"] for event in told]
    assert names[0] == "listing" and told[0]["accounts"] == 1
    assert "applying" in names and names.count("request") == 11  # a listing, 10 writes
    failed = [event for event in told if event["event"] == "failed"]
    assert [(e["level"], e["account"], e["keyName"], e["secretId"]) for e in failed] == [
        ("error", ACCOUNT, key_for(i), f"secret-{i:05d}") for i in range(2)
    ]
    assert failed[0]["error"] == "already exists (--on-existing fail)"
    again = next(event for event in told if event["event"] == "run_again")
    assert "--only-failed" in again["message"]
    summary = told[-1]
    assert summary["event"] == "summary" and summary["level"] == "warning"
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (12, 10, 2)
    assert summary["byAccount"] == {
        ACCOUNT: {"succeeded": 10, "failed": 2, "skipped": 0, "not_attempted": 0}
    }
    assert summary["message"].startswith("12 secrets: 10 succeeded, 2 failed")
    assert CANARY not in err and API_KEY not in err


async def test_json_errors_are_events_too(tmp_path: Path) -> None:
    code, _, err = await run_main("validate", "--log-format", "json", str(tmp_path / "no.yaml"))
    assert code == 2
    (event,) = events(err)
    assert event["level"] == "error"
    code, _, err = await run_main(
        "apply", "manifests/example.yaml", "--sandbox", "--log-format", "json", "--progress"
    )
    assert code == 2
    assert events(err)[-1]["level"] == "error"


def test_a_json_field_never_replaces_time_level_or_event_and_is_escaped() -> None:
    err = io.StringIO()
    logs.configure(log_format="json")
    try:
        with redirect_stderr(err):
            say("from a server: \x1b[31mred\u202e", event="failed", level="error",
                error="\x1b]0;title\x07", time="then")  # fmt: skip
    finally:
        logs.configure()
    line = err.getvalue()
    assert "\x1b" not in line and "\\u001b" not in line  # escaped before JSON saw it
    (event,) = events(line)
    assert event["event"] == "failed" and event["time"] != "then"
    assert event["message"] == "from a server: \\x1b[31mred\\u202e"
    assert event["error"] == "\\x1b]0;title\\x07"


# Summaries


def result(account: str, status: Status, index: int = 0) -> Result:
    return Result(
        account=account, key_name=key_for(index), secret_id=f"secret-{index:05d}",
        location=f"m.yaml:{index + 2}", action=Action.CREATE, status=status,
        error=None if status is Status.SUCCEEDED else "already exists (--on-existing fail)",
    )  # fmt: skip


def summary_of(*results: Result) -> Summary:
    summary = Summary()
    for each in results:
        summary.add(each)
    return summary


def printed(summary: Summary, *, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = print_summary(summary, as_json=as_json)
    return code, out.getvalue(), err.getvalue()


def test_the_text_summary_has_a_line_per_account_when_there_are_more() -> None:
    summary = summary_of(
        *(result("acct-a", Status.SUCCEEDED, i) for i in range(10)),
        result("acct-a", Status.FAILED, 10),
        result("acct-b", Status.SUCCEEDED),
        result("acct-b", Status.NOT_ATTEMPTED, 1),
    )
    code, _, err = printed(summary)
    assert code == 1
    assert "bulk-secrets: acct-a: 10 succeeded, 1 failed\n" in err
    assert "bulk-secrets: acct-b: 1 succeeded, 1 not attempted\n" in err
    _, _, err = printed(summary_of(result("acct-a", Status.SUCCEEDED)))
    assert "acct-a:" not in err  # one account: the summary says it all


def test_past_twenty_accounts_those_with_something_left_come_first() -> None:
    summary = summary_of(
        *(result(f"acct-{i:02d}", Status.SUCCEEDED) for i in range(30)),
        result("acct-29", Status.FAILED, 1),
    )
    _, _, err = printed(summary)
    named = re.findall(r"^bulk-secrets: (acct-\d+): ", err, re.MULTILINE)
    assert len(named) == 20 and "acct-29" in named
    assert "bulk-secrets: ... and 10 more accounts: see --output json or --report" in err


def test_output_json_has_by_account_and_the_failures() -> None:
    summary = summary_of(
        result("acct-a", Status.SUCCEEDED),
        *(result("acct-b", Status.FAILED, i) for i in range(3)),
    )
    _, out, _ = printed(summary, as_json=True)
    record = json.loads(out)
    assert record["byAccount"] == {
        "acct-a": {"succeeded": 1, "failed": 0, "skipped": 0, "not_attempted": 0},
        "acct-b": {"succeeded": 0, "failed": 3, "skipped": 0, "not_attempted": 0},
    }
    assert record["failures"][0] == {
        "account": "acct-b", "keyName": key_for(0), "secretId": "secret-00000",
        "location": "m.yaml:2", "error": "already exists (--on-existing fail)",
    }  # fmt: skip
    assert len(record["failures"]) == 3


def test_output_json_keeps_the_first_thousand_failures_and_text_names_twenty() -> None:
    summary = summary_of(*(result("acct-a", Status.FAILED, i) for i in range(1_200)))
    _, out, err = printed(summary, as_json=True)
    assert len(json.loads(out)["failures"]) == 1_000
    assert len(re.findall(r"^bulk-secrets: failed: ", err, re.MULTILINE)) == 20
    assert "bulk-secrets: ... and 1180 more failed: see --report" in err


def test_counts_are_grammatical() -> None:
    summary = summary_of(result("acct-a", Status.SUCCEEDED))
    summary.requests, summary.retries = 1, 1
    assert summary.line().startswith("1 secret: 1 succeeded, 0 failed")
    assert "(1 request, 1 retry, " in summary.line()
    summary = summary_of(result("acct-a", Status.SUCCEEDED), result("acct-a", Status.SUCCEEDED))
    summary.requests, summary.retries = 2, 2
    assert summary.line().startswith("2 secrets: ")
    assert "(2 requests, 2 retries, " in summary.line()


async def test_the_cli_says_one_account_and_one_secret(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 1)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_main(*run_args(manifest, server.base_url))
    assert code == 0, err
    assert "bulk-secrets: 1 account at " in err and "each listed as the run reaches it" in err
    assert "bulk-secrets: applying 1 secret at " in err
    assert "bulk-secrets: 1 secret: 1 succeeded" in err
