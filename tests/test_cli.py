"""The real CLI, as a separate process, against the emulator over loopback sockets."""

from __future__ import annotations

import gc
import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulk_secrets.cli import entry
from bulk_secrets.cli.collector import RUN_THRESHOLD
from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator

from .helpers import (
    ACCOUNT,
    API_KEY,
    CANARY,
    ROOT,
    cli_env,
    key_for,
    read_until,
    run_cli,
    run_main,
    value_for,
    write_yaml_manifest,
)

pytestmark = pytest.mark.anyio


async def test_sandbox_applies_the_example_manifest(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out, err = await run_cli(
        "apply", "manifests/example.yaml", "--sandbox", "--report", str(report), env=cli_env(None)
    )
    assert code == 0, err
    assert "sandbox" in err
    assert "5 succeeded" in err
    data = json.loads(report.read_text())
    assert data["summary"]["succeeded"] == 5
    for value in ("sk-example-0000000000000000", "EXAMPLE-APPID", "evaluator:example"):
        assert value not in out + err + report.read_text()


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
async def test_canary_values_never_reach_any_output(tmp_path: Path, suffix: str) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 200)
    report = tmp_path / f"report{suffix}"
    faults = Faults(seed=3, error_rate=0.1, drop_rate=0.1, write_then_fail_rate=0.1)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None}, faults=faults)) as server:
        server.put(ACCOUNT, "secret-00007", "SECRET_00007", "old")
        code, out, err = await run_cli(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--retries", "0", "--max-rps", "0", "--report", str(report),
        )  # fmt: skip
    assert code == 1  # with no retries some secrets fail: their errors are printed too
    text = report.read_text()
    assert "failed" in text
    for output in (out, err, text):
        assert CANARY not in output
        assert "line2" not in output


async def test_exit_0_when_all_succeed_and_1_when_one_fails(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 20)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        base = ("apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url)
        code, _, err = await run_main(*base)
        assert code == 0, err
        code, _, err = await run_main(*base, "--on-existing", "fail")
        assert code == 1
        assert "20 failed" in err
        code, _, err = await run_main(*base, "--on-existing", "skip")
        assert code == 0, err
        assert "20 skipped" in err


async def test_bad_key_exits_3(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 50)
    report = tmp_path / "r.json"
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_main(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--concurrency", "2", "--report", str(report), env=cli_env("wrong-key"),
        )  # fmt: skip
    assert code == 3
    assert "401" in err
    summary = json.loads(report.read_text())["summary"]
    assert summary["total"] == 50
    assert summary["not_attempted"] >= 48


async def test_broken_manifest_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "secrets:\n  - keyName: GOOD\n    value: ok\n  - keyName: 9BAD\n    value: x\n"
        "  - keyName: ALSO_GOOD\n    value: 0123\n  - keyName: LAST\n    valeu: x\n"
    )
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_main(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url
        )
        assert server.stats.count() == 0
    assert code == 2
    assert f"{manifest}:4" in err  # 9BAD
    assert f"{manifest}:7" in err  # 0123 is an int to YAML
    assert f"{manifest}:8" in err  # no value
    assert f"{manifest}:9" in err  # valeu: did you mean value?
    assert "'value'" in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--account", ACCOUNT), cli_env(None), "FIREWORKS_API_KEY"),
        ((), cli_env(), "no target account"),
        (("--account", ACCOUNT, "--concurrency", "0"), cli_env(), "concurrency must be > 0"),
        (("--account", ACCOUNT, "--report", "r.txt"), cli_env(), ".json, .jsonl or .csv"),
        (("--bogus",), cli_env(), "unrecognized arguments"),
    ],
)
async def test_usage_errors_exit_2(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    code, _, err = await run_main("apply", "manifests/example.yaml", *args, env=env)
    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    ("faults", "marker", "in_flight", "statuses"),
    [
        pytest.param(
            Faults(write_latency=60.0),
            "applying 100 secrets",
            4,  # every worker waits for an answer
            {"failed", "not_attempted"},
            id="while-writing",
        ),
        pytest.param(
            Faults(latency=60.0), "1 account at", 1, {"not_attempted"}, id="while-listing"
        ),
    ],
)
async def test_interrupt_exits_130_with_every_secret_in_the_report(
    tmp_path: Path, faults: Faults, marker: str, in_flight: int, statuses: set[str]
) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 100)
    report = tmp_path / "r.json"
    config = EmulatorConfig(keys={API_KEY: None}, faults=faults)
    async with running_emulator(config) as server:
        process = await anyio.open_process(
            [sys.executable, "-m", "bulk_secrets", "apply", str(manifest), "--account", ACCOUNT,
             "--base-url", server.base_url, "--concurrency", "4", "--report", str(report)],
            env=cli_env(),
            cwd=ROOT,
        )  # fmt: skip
        async with process:
            await read_until(process, marker)
            await server.wait_until(lambda stats: stats.in_flight >= in_flight)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                code = await process.wait()
    assert code == 130
    data = json.loads(report.read_text())
    assert data["summary"]["total"] == 100
    assert len(data["results"]) == 100
    assert {r["status"] for r in data["results"]} == statuses
    assert all(r["error"] for r in data["results"])
    failed = [r for r in data["results"] if r["status"] == "failed"]
    assert len(failed) == (in_flight if "failed" in statuses else 0)  # those in flight


async def test_a_value_file_gone_mid_run_exits_1_with_a_complete_report(tmp_path: Path) -> None:
    """The file of entry 31 of 41 vanishes after the writes began: that secret fails with the
    reason, the rest are reported, and no traceback reaches the terminal."""
    lines = [f"  - {{keyName: {key_for(i)}, value: {json.dumps(value_for(i))}}}" for i in range(30)]
    lines.append("  - {keyName: FROM_FILE, fromFile: value.txt}")
    lines += [
        f"  - {{keyName: {key_for(i)}, value: {json.dumps(value_for(i))}}}" for i in range(30, 40)
    ]
    manifest = tmp_path / "m.yaml"
    manifest.write_text("secrets:\n" + "\n".join(lines) + "\n")
    (tmp_path / "value.txt").write_text(CANARY)
    report = tmp_path / "r.jsonl"
    config = EmulatorConfig(keys={API_KEY: None}, faults=Faults(write_latency=0.02))
    async with running_emulator(config) as server:
        process = await anyio.open_process(
            [sys.executable, "-m", "bulk_secrets", "apply", str(manifest), "--account", ACCOUNT,
             "--base-url", server.base_url, "--concurrency", "1", "--report", str(report)],
            env=cli_env(),
            cwd=ROOT,
        )  # fmt: skip
        async with process:
            await server.wait_until(lambda stats: stats.count(method="POST") >= 2)
            (tmp_path / "value.txt").unlink()
            assert process.stderr is not None
            with anyio.fail_after(30):
                err = b"".join([chunk async for chunk in process.stderr]).decode()
                code = await process.wait()
    assert code == 1
    assert "Traceback" not in err
    records = [json.loads(line) for line in report.read_text().splitlines()]
    summary = records.pop()["summary"]
    assert summary["total"] == len(records) == 41
    assert summary["stopped"] and "value.txt" in summary["stopped"]
    by_key = {r["keyName"]: r for r in records}
    assert by_key["FROM_FILE"]["status"] == "failed"
    assert "value.txt" in by_key["FROM_FILE"]["error"]
    assert {by_key[key_for(i)]["status"] for i in range(35, 40)} == {"not_attempted"}
    assert CANARY not in err + report.read_text()


async def test_main_gives_the_collector_back_running_and_unfrozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # main pauses the garbage collector while the manifests load, freezes what they hold and
    # runs the command at a higher threshold; a caller that goes on in the same process gets
    # the collector back as it was, after an error too.
    during: list[tuple[int, int, int]] = []
    validate = entry._validate

    def watched(*args: Any, **kwargs: Any) -> int:
        during.append(gc.get_threshold())
        assert gc.isenabled() and gc.get_freeze_count() > 0
        return validate(*args, **kwargs)

    monkeypatch.setattr(entry, "_validate", watched)
    before = gc.get_threshold()
    broken = tmp_path / "broken.csv"
    broken.write_text("keyName,value\n9_NOT_A_NAME,x\n")
    for manifest, exit_code in (("manifests/example.csv", 0), (str(broken), 2)):
        code, _, err = await run_main("validate", manifest, "--account", "team-a")
        assert code == exit_code, err
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
    assert during == [(RUN_THRESHOLD, *before[1:])]  # the broken manifest never got that far


async def test_validate_lists_targets_without_values_and_sends_nothing(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 3)
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# teams\nteam-a\n\nteam-b  # the second\n")
    code, out, err = await run_main("validate", str(manifest), "--accounts-file", str(accounts))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ACCOUNT", "KEY", "NAME", "SECRET", "ID", "SOURCE", "WHERE"]
    assert len(lines) == 1 + 6
    assert {line.split()[0] for line in lines[1:]} == {"team-a", "team-b"}
    assert "6 secrets for 2 accounts" in err
    assert CANARY not in out + err


async def test_bad_accounts_file_exits_2_with_its_line(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("team-a\nTeam_B\n")
    code, _, err = await run_main(
        "validate", "manifests/example.yaml", "--accounts-file", str(accounts)
    )
    assert code == 2
    assert f"{accounts}:2:" in err


async def test_manifest_from_stdin(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    result = await anyio.run_process(
        [sys.executable, "-m", "bulk_secrets", "apply", "-", "--format", "dotenv", "--sandbox",
         "--report", str(report)],
        input=f"A_KEY={CANARY}\nexport B_KEY='two'\n".encode(),
        check=False,
        env=cli_env(None),
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = report.read_text().splitlines()
    assert rows[0].startswith("account,keyName,secretId")
    assert len(rows) == 3
    assert all(",<stdin>:" in row and ",succeeded," in row for row in rows[1:])
    assert CANARY not in result.stderr.decode() + report.read_text()


async def test_a_run_with_no_terminal_never_imports_rich(tmp_path: Path) -> None:
    """rich draws the progress on a terminal; a run from cron or CI (stderr a pipe) must not
    pay for importing it (some 20 ms inside the run's own time)."""
    result = await anyio.run_process(
        [sys.executable, "-X", "importtime", "-m", "bulk_secrets", "apply", "-", "--format",
         "dotenv", "--sandbox", "--report", str(tmp_path / "r.jsonl")],
        input=b"A_KEY=one\n",
        check=False,
        env=cli_env(None),
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if "import time:" in line}
    assert {"aiohttp", "bulk_secrets.cli.progress"} <= imported  # the list is complete
    assert not [name for name in imported if name.split(".")[0] == "rich"]


async def test_what_the_loop_needs_is_imported_before_the_run_begins() -> None:
    """anyio imports its backend when the loop starts: after the manifests are read, in the
    run's own time. The package imports it up front, as part of start-up."""
    code = "import sys, bulk_secrets; print(*sys.modules)"
    result = await anyio.run_process([sys.executable, "-c", code], check=True, cwd=ROOT)
    imported = result.stdout.decode().split()
    assert "bulk_secrets.provision" in imported  # the list is complete
    assert "anyio._backends._asyncio" in imported


async def test_converges_through_every_fault_at_once(tmp_path: Path) -> None:
    """5xx, dropped connections and write-then-fail at 10% each, and 429 with Retry-After.

    The 429s say ``Retry-After: 0`` so that this process test does not wait in real time;
    ``test_apply`` meets whole seconds of Retry-After, at 15% of each fault, on a virtual
    clock."""
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 300)
    report = tmp_path / "r.json"
    faults = Faults(
        seed=11,
        error_rate=0.1,
        drop_rate=0.1,
        write_then_fail_rate=0.1,
        rate_limit=200.0,
        burst=20,
        retry_after=True,
        retry_after_seconds=0,
    )
    async with running_emulator(EmulatorConfig(keys={API_KEY: None}, faults=faults)) as server:
        code, out, err = await run_cli(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--retries", "12", "--max-rps", "400", "--report", str(report),
        )  # fmt: skip
        stored = server.secrets(ACCOUNT)
        seen = server.stats.requests
    assert code == 0, err
    assert {status for (_, status) in seen} >= {0, 200, 409, 429, 500, 502, 503, 504}
    values = {key: value for key, value in stored.values()}
    assert values == {key_for(i): value_for(i) for i in range(300)}
    data = json.loads(report.read_text())
    assert data["summary"]["succeeded"] == 300
    assert {r["secretId"] for r in data["results"]} == set(stored)
    for output in (out, err, report.read_text()):
        assert CANARY not in output


async def test_failures_are_named_on_stderr_without_values(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 30)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for i in range(25):
            server.put(ACCOUNT, f"secret-{i:05d}", key_for(i), "old")
        code, _, err = await run_main(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--on-existing", "fail",
        )  # fmt: skip
    assert code == 1
    named = [line for line in err.splitlines() if line.startswith("bulk-secrets: failed: ")]
    assert len(named) == 20
    assert f"{ACCOUNT} {key_for(0)} ({manifest}:2): already exists (--on-existing fail)" in err
    assert "... and 5 more failed: see --report" in err
    assert CANARY not in err


async def test_two_api_keys_for_one_account_is_a_usage_error(tmp_path: Path) -> None:
    for name, var in (("a.yaml", "KEY_ONE"), ("b.yaml", "KEY_TWO")):
        (tmp_path / name).write_text(
            f"account: team-a\napiKeys: {{team-a: {{fromEnv: {var}}}}}\n"
            f'secrets: {{{name[0].upper()}_TOKEN: "t"}}\n'
        )
    env = {**cli_env(), "KEY_ONE": "1", "KEY_TWO": "2"}
    args = (str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--sandbox")
    code, _, err = await run_main("plan", *args, env=env)
    assert code == 0  # the sandbox has its own key
    code, _, err = await run_main("plan", *args[:2], "--base-url", "http://127.0.0.1:9", env=env)
    assert code == 2
    assert "two API keys for account 'team-a': KEY_ONE and KEY_TWO" in err


async def test_the_cli_adds_the_flag_that_helps_to_what_the_library_says(tmp_path: Path) -> None:
    code, _, err = await run_main("validate", "-")
    assert code == 2
    assert "<stdin>: error: unknown manifest format: name its format" in err
    assert "hint: pass --format" in err

    manifest = write_yaml_manifest(tmp_path / "m.yaml", 2)
    config = EmulatorConfig(keys={API_KEY: None}, faults=Faults(write_latency=0.5))
    async with running_emulator(config) as server:
        code, _, err = await run_main(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            "--timeout", "0.1", "--retries", "0",
        )  # fmt: skip
    assert code == 1
    assert "POST got no answer within 0.1s" in err
    assert err.count("hint: raise --timeout") == 1
