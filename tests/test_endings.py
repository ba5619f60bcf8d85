"""Every ending leaves a complete report: signals, a prompt that listens, paths checked first,
rows accounted for, and resuming from whatever a run leaves. The real CLI, real sockets."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulk_secrets.emulator import Emulator, EmulatorConfig, Faults, running_emulator
from bulk_secrets.report import read_done

from .helpers import (
    ACCOUNT,
    API_KEY,
    CANARY,
    ROOT,
    cli_env,
    key_for,
    read_until,
    run_main,
    value_for,
    write_yaml_manifest,
)

pytestmark = pytest.mark.anyio

COUNT = 120
SLOW_WRITES = EmulatorConfig(keys={API_KEY: None}, faults=Faults(write_latency=0.02))


def _records(report: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The results of a report of any format, and its summary (None where it has none)."""
    text = report.read_text()
    assert CANARY not in text
    if report.suffix == ".json":
        data = json.loads(text)
        return data["results"], data["summary"]
    if report.suffix == ".jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        summary = lines.pop()["summary"] if lines and "summary" in lines[-1] else None
        return lines, summary
    return list(csv.DictReader(io.StringIO(text, newline=""))), None


async def _apply_then_signal(
    server: Emulator, manifest: Path, report: Path, signals: list[signal.Signals], *extra: str
) -> tuple[int, str, str]:
    """Start apply, send the signals once writes are under way, and wait for the end."""
    command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest), "--account",
               ACCOUNT, "--base-url", server.base_url, "--concurrency", "4", "--max-rps", "0",
               "--report", str(report), *extra]  # fmt: skip
    async with await anyio.open_process(command, env=cli_env(), cwd=ROOT) as process:
        seen = await read_until(process, f"applying {COUNT} secrets")
        await server.wait_until(lambda stats: stats.count(method="POST") >= 20)
        process.send_signal(signals[0])
        if signals[1:]:  # the next once the first is taken: sent together, either may land first
            seen += await read_until(process, "stopping; the report is being finished")
            for signum in signals[1:]:
                process.send_signal(signum)
        assert process.stdout is not None and process.stderr is not None
        with anyio.fail_after(30):
            out = b"".join([chunk async for chunk in process.stdout]).decode()
            err = seen + b"".join([chunk async for chunk in process.stderr]).decode()
            code = await process.wait()
    return code, out, err


@pytest.mark.parametrize(
    ("signals", "code", "suffix"),
    [
        pytest.param([signal.SIGTERM], 143, ".json", id="SIGTERM-json"),
        pytest.param([signal.SIGTERM], 143, ".jsonl", id="SIGTERM-jsonl"),
        pytest.param([signal.SIGHUP], 129, ".csv", id="SIGHUP-csv"),
        pytest.param([signal.SIGINT, signal.SIGINT], 130, ".json", id="two-SIGINTs-json"),
        pytest.param([signal.SIGTERM, signal.SIGINT], 143, ".jsonl", id="SIGTERM-then-SIGINT"),
    ],
)
async def test_a_signal_ends_the_run_with_a_complete_report_and_a_way_to_resume(
    tmp_path: Path, signals: list[signal.Signals], code: int, suffix: str
) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    report = tmp_path / f"r{suffix}"
    async with running_emulator(SLOW_WRITES) as server:
        got, out, err = await _apply_then_signal(
            server, manifest, report, signals, "--output", "json"
        )
        assert got == code, err
        results, summary = _records(report)
        assert len(results) == COUNT
        assert {r["secretId"] for r in results} == {f"secret-{i:05d}" for i in range(COUNT)}
        assert {r["status"] for r in results} <= {"succeeded", "failed", "not_attempted"}
        assert all(r["error"] for r in results if r["status"] != "succeeded")
        name = signals[0].name
        printed = json.loads(out)
        assert printed["stopped"] == f"interrupted by {name}"
        if summary is not None:
            assert summary == {**summary, "total": COUNT, "stopped": f"interrupted by {name}"}
        assert not [name for name in os.listdir(tmp_path) if name.endswith((".partial", ".tmp"))]
        resume = [line for line in err.splitlines() if "to run again only what is left: " in line]
        assert len(resume) == 1
        again = shlex.split(resume[0].split("to run again only what is left: ", 1)[1])
        assert again[0] == "bulk-secrets" and again[-2:] == ["--only-failed", str(report)]
        code, _, err = await run_main(*again[1:])
        assert code == 0, err
        stored = {key: value for key, value in server.secrets(ACCOUNT).values()}
    assert stored == {key_for(i): value_for(i) for i in range(COUNT)}


async def test_ctrl_c_at_the_prune_prompt_exits_130_at_once_with_nothing_changed(
    tmp_path: Path,
) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 3)
    report = tmp_path / "r.json"
    leader, follower = pty.openpty()
    try:
        async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
            server.put(ACCOUNT, "stray", "STRAY", "old")
            command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest),
                       "--account", ACCOUNT, "--base-url", server.base_url, "--prune",
                       "--report", str(report)]  # fmt: skip
            async with await anyio.open_process(
                command, stdin=follower, env=cli_env(), cwd=ROOT
            ) as process:
                await read_until(process, "Delete this 1 secret? [y/N]")
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(30):
                    assert await process.wait() == 130
            assert server.stats.writes == 0
            assert "stray" in server.secrets(ACCOUNT)
    finally:
        os.close(leader)
        os.close(follower)
    results, summary = _records(report)
    assert len(results) == 3 and {r["status"] for r in results} == {"not_attempted"}
    assert summary is not None and summary["stopped"] == "interrupted by SIGINT"


@pytest.mark.parametrize("flag", ["--state", "--report"])
@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
async def test_a_path_that_cannot_be_written_is_a_usage_error_before_any_request(
    tmp_path: Path, flag: str, where: str
) -> None:
    path = tmp_path / "missing" / "file.json" if where == "missing-folder" else tmp_path
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_main(
            "apply", "manifests/example.yaml", "--account", ACCOUNT,
            "--base-url", server.base_url, flag, str(path),
        )  # fmt: skip
        assert server.stats.count() == 0
    assert code == 2, err


async def test_rows_for_accounts_not_targeted_are_reported_skipped(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "account,keyName,value\nacct-a,A_KEY,a\nacct-typo,B_KEY,b\nacct-a,C_KEY,c\n"
    )
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("acct-a\n")
    report = tmp_path / "r.json"
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_main(
            "apply", str(manifest), "--accounts-file", str(accounts),
            "--base-url", server.base_url, "--report", str(report),
        )  # fmt: skip
        assert len(server.secrets("acct-a")) == 2
        assert server.secrets("acct-typo") == {}
    assert code == 0, err
    results, summary = _records(report)
    assert summary is not None and (summary["total"], summary["skipped"]) == (3, 1)
    skipped = [r for r in results if r["status"] == "skipped"]
    assert [(r["account"], r["keyName"], r["error"]) for r in skipped] == [
        ("acct-typo", "B_KEY", "account not targeted by this run")
    ]
    assert f"{manifest}:3" in skipped[0]["location"]


async def test_only_failed_resumes_a_killed_json_run_from_its_partial(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    report = tmp_path / "r.json"
    async with running_emulator(SLOW_WRITES) as server:
        command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest), "--account",
                   ACCOUNT, "--base-url", server.base_url, "--concurrency", "4", "--max-rps", "0",
                   "--report", str(report)]  # fmt: skip
        async with await anyio.open_process(command, env=cli_env(), cwd=ROOT) as process:
            await server.wait_until(lambda stats: stats.count(method="POST", status=200) >= 20)
            process.send_signal(signal.SIGKILL)
            with anyio.fail_after(30):
                await process.wait()
        assert not report.exists()
        partial = report.with_name("r.json.partial")
        done = read_done(report)  # what the killed run left: its .partial
        assert done.source == partial and len(done.keys) >= 1
        server.stats.reset()
        code, _, err = await run_main(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--max-rps", "0", "--only-failed", str(report), "--report", str(report),
        )  # fmt: skip
        assert code == 0, err
        assert server.stats.count(method="POST", status=200) <= COUNT - len(done.keys)
        stored = {key: value for key, value in server.secrets(ACCOUNT).values()}
    assert stored == {key_for(i): value_for(i) for i in range(COUNT)}
    results, _ = _records(report)
    earlier = [r for r in results if r["error"] == "done in the earlier run (--only-failed)"]
    assert len(earlier) == len(done.keys)


async def test_only_failed_with_a_report_of_other_manifests_says_so(tmp_path: Path) -> None:
    other = write_yaml_manifest(tmp_path / "other.yaml", 5)
    report = tmp_path / "r.jsonl"
    mine = tmp_path / "mine.yaml"
    mine.write_text('secrets: {MINE_ONLY: "m"}\n')
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        base = ("--account", ACCOUNT, "--base-url", server.base_url)
        code, _, _ = await run_main("apply", str(other), *base, "--report", str(report))
        assert code == 0
        code, _, err = await run_main("apply", str(mine), *base, "--only-failed", str(report))
    assert code == 0, err
    assert f"5 secrets that {report} shows done are not in these manifests" in err
