"""Converging: plan, write policies, prune, verify, state, resume; the real CLI, real sockets."""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulk_secrets.emulator import Emulator, EmulatorConfig, Faults, running_emulator

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

KEYS = EmulatorConfig(keys={API_KEY: None})
COUNT = 20


def _target(server: Emulator, *extra: str) -> tuple[str, ...]:
    return ("--account", ACCOUNT, "--base-url", server.base_url, *extra)


def _values(server: Emulator) -> dict[str, str]:
    return {key: value for key, value in server.secrets(ACCOUNT).values()}


def _results(report: Path) -> list[dict[str, Any]]:
    text = report.read_text()
    assert CANARY not in text
    results: list[dict[str, Any]] = json.loads(text)["results"]
    return results


def _partly_provisioned(server: Emulator) -> None:
    """Secrets 0-4 there already (stale), 5-19 missing, and two the manifest does not name."""
    for i in range(5):
        server.put(ACCOUNT, f"secret-{i:05d}", key_for(i), "stale")
    server.put(ACCOUNT, "legacy-token", "LEGACY_TOKEN", "old")
    server.put(ACCOUNT, "ci-deploy-key", "CI_DEPLOY_KEY", "keep me")


async def test_rerun_with_on_existing_skip_writes_nothing(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    report = tmp_path / "r.json"
    async with running_emulator(KEYS) as server:
        code, _, err = await run_main("apply", str(manifest), *_target(server))
        assert code == 0, err
        server.stats.reset()
        code, _, err = await run_main(
            "apply",
            str(manifest),
            *_target(server, "--on-existing", "skip", "--report", str(report)),
        )
        assert code == 0, err
        assert server.stats.writes == 0
        assert server.stats.count(method="GET") == 1  # the plan's one listing
    results = _results(report)
    assert len(results) == COUNT
    assert {(r["status"], r["error"]) for r in results} == {
        ("skipped", "already exists (--on-existing skip)")
    }


async def test_state_makes_an_unchanged_rerun_write_nothing(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    state = tmp_path / "state.json"
    report = tmp_path / "r.json"
    async with running_emulator(KEYS) as server:
        args = ("apply", str(manifest), *_target(server, "--state", str(state)))
        code, _, err = await run_main(*args)
        assert code == 0, err
        assert CANARY not in state.read_text()
        assert oct(state.stat().st_mode & 0o777) == "0o600"

        server.stats.reset()
        code, _, err = await run_main(*args, "--report", str(report))
        assert code == 0, err
        assert server.stats.writes == 0
        results = _results(report)
        assert {(r["status"], r["error"]) for r in results} == {
            ("skipped", "unchanged since the last run (--state)")
        }

        # One value changes in the manifest; one secret is deleted behind the tool's back.
        text = manifest.read_text()
        manifest.write_text(text.replace(json.dumps(value_for(3)), json.dumps("changed")))
        server.remove(ACCOUNT, "secret-00007")
        server.stats.reset()
        code, _, err = await run_main(*args, "--report", str(report))
        assert code == 0, err
        assert server.stats.count(method="PATCH") == 1
        assert server.stats.count(method="POST") == 1
        assert _values(server)[key_for(3)] == "changed"
    changed = {r["secretId"]: r["action"] for r in _results(report) if r["status"] == "succeeded"}
    assert changed == {"secret-00003": "update", "secret-00007": "create"}


async def test_plan_lists_exactly_what_would_change_and_writes_nothing(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    async with running_emulator(KEYS) as server:
        _partly_provisioned(server)
        for command in (("plan",), ("apply", "--dry-run")):
            code, out, err = await run_main(
                *command,
                str(manifest),
                *_target(server, "--prune", "--keep", "CI_*", "--output", "json"),
            )
            assert code == 0, err
            plan = json.loads(out)
            by_kind: dict[str, list[str]] = {}
            for step in plan["steps"]:
                assert step["account"] == ACCOUNT
                by_kind.setdefault(step["plan"], []).append(step["secretId"])
            assert {kind: sorted(ids) for kind, ids in by_kind.items()} == {
                "create": [f"secret-{i:05d}" for i in range(5, COUNT)],
                "update": [f"secret-{i:05d}" for i in range(5)],
                "delete": ["legacy-token"],
            }
            counts = {"create": COUNT - 5, "update": 5, "delete": 1}
            assert plan["summary"] == plan["byAccount"][ACCOUNT] == dict(sorted(counts.items()))
            assert "nothing was written" in err
            assert CANARY not in out + err
        assert server.stats.writes == 0
        code, out, _ = await run_main("plan", str(manifest), *_target(server, "--prune"))
        assert code == 0
        assert "+ create" in out and "~ update" in out and "- delete" in out


async def test_prune_leaves_exactly_the_manifest_sparing_keep(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    report = tmp_path / "r.json"
    async with running_emulator(KEYS) as server:
        _partly_provisioned(server)
        code, _, err = await run_main(
            "apply", str(manifest), *_target(server, "--prune", "--keep", "ci-*")
        )
        assert code == 2  # no --yes, and no terminal to ask on
        assert "--yes" in err and "legacy-token" in err
        assert server.stats.writes == 0

        code, _, err = await run_main(
            "apply",
            str(manifest),
            *_target(server, "--prune", "--yes", "--keep", "ci-*", "--report", str(report)),
        )
        assert code == 0, err
        assert sorted(server.secrets(ACCOUNT)) == sorted(
            [f"secret-{i:05d}" for i in range(COUNT)] + ["ci-deploy-key"]
        )
        assert _values(server)["CI_DEPLOY_KEY"] == "keep me"
        assert server.stats.count(method="DELETE") == 1
    deleted = [r for r in _results(report) if r["action"] == "delete"]
    assert [(r["secretId"], r["status"]) for r in deleted] == [("legacy-token", "succeeded")]


async def test_verify_reports_drift_by_name(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", COUNT)
    async with running_emulator(KEYS) as server:
        code, _, _ = await run_main("apply", str(manifest), *_target(server))
        assert code == 0
        code, out, err = await run_main("verify", str(manifest), *_target(server))
        assert (code, out) == (0, "")
        assert "cannot be read back" in err

        server.stats.reset()
        server.remove(ACCOUNT, "secret-00002")  # drift made by someone else
        server.put(ACCOUNT, "secret-00004", "OTHER_NAME", "v")
        server.put(ACCOUNT, "stray", "STRAY", "v")
        code, out, _ = await run_main("verify", str(manifest), *_target(server, "--output", "json"))
        assert server.stats.writes == 0
    assert code == 1
    drift = json.loads(out)
    assert [d["secretId"] for d in drift["missing"]] == ["secret-00002"]
    assert [(d["secretId"], d["actualKeyName"]) for d in drift["renamed"]] == [
        ("secret-00004", "OTHER_NAME")
    ]
    assert [d["secretId"] for d in drift["unexpected"]] == ["stray"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
async def test_killed_run_leaves_whole_lines_and_only_failed_finishes(
    tmp_path: Path, suffix: str
) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 200)
    first, second = tmp_path / f"first{suffix}", tmp_path / "second.json"
    config = EmulatorConfig(keys={API_KEY: None}, faults=Faults(write_latency=0.01))
    async with running_emulator(config) as server:
        process = await anyio.open_process(
            [sys.executable, "-m", "bulk_secrets", "apply", str(manifest),
             *_target(server, "--concurrency", "4", "--report", str(first))],
            env=cli_env(),
            cwd=ROOT,
        )  # fmt: skip
        async with process:
            await read_until(process, "applying 200 secrets")
            await server.wait_until(lambda stats: stats.count(method="POST", status=200) >= 60)
            process.send_signal(signal.SIGKILL)
            with anyio.fail_after(30):
                assert await process.wait() == -signal.SIGKILL
        text = first.read_text()
        assert text.endswith("\n")  # whole lines only
        if suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines()]  # each parses alone
            assert "summary" not in records[-1]  # killed: no summary line was written
        else:
            records = list(csv.DictReader(io.StringIO(text, newline="")))
        assert 40 <= len(records) < 200
        assert all(r["status"] == "succeeded" for r in records)

        resume = ("--only-failed", str(first), "--report", str(second), "--max-rps", "0")
        code, _, err = await run_main("apply", str(manifest), *_target(server, *resume))
        assert code == 0, err
        assert _values(server) == {key_for(i): value_for(i) for i in range(200)}
    results = _results(second)
    assert len(results) == 200
    earlier = [r for r in results if r["status"] == "skipped"]
    assert {r["secretId"] for r in earlier} == {r["secretId"] for r in records}
    assert {r["error"] for r in earlier} == {"done in the earlier run (--only-failed)"}
    assert all(r["status"] == "succeeded" for r in results if r not in earlier)


async def test_apply_output_json_prints_the_summary(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 5)
    async with running_emulator(KEYS) as server:
        server.put(ACCOUNT, "secret-00000", key_for(0), "stale")
        code, out, err = await run_main(
            "apply", str(manifest), *_target(server, "--output", "json")
        )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["total"] == 5
    assert summary["succeeded"] == 5
    assert summary["byAction"] == {"create": 4, "update": 1}
    assert summary["requests"] == 6
    assert summary["retries"] == 0
    assert summary["durationSeconds"] > 0
    assert "5 succeeded" in err


async def test_a_write_refused_by_policy_keeps_the_state_of_what_is_there(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 3)
    original = manifest.read_text()
    state = tmp_path / "state.json"
    async with running_emulator(KEYS) as server:
        args = ("apply", str(manifest), *_target(server, "--state", str(state)))
        assert (await run_main(*args))[0] == 0
        manifest.write_text(original.replace(json.dumps(value_for(1)), json.dumps("other")))
        code, _, _ = await run_main(*args, "--on-existing", "fail")
        assert code == 1  # the changed secret exists: failed by policy, nothing written
        manifest.write_text(original)  # back to what the account holds
        server.stats.reset()
        assert (await run_main(*args))[0] == 0
        assert server.stats.writes == 0


async def test_a_plan_of_several_accounts_prints_each_step_as_read_then_the_counts() -> None:
    async with running_emulator(KEYS) as server:
        server.put("team-b", "wandb-api-key", "WANDB_API_KEY", "old")
        code, out, err = await run_main(
            "plan", str(ROOT / "manifests" / "onboarding.csv"), "--base-url", server.base_url
        )
        assert code == 0, err
        assert server.stats.writes == 0
    lines = out.splitlines()
    # In the manifest's order: a name line whenever the account changes.
    assert [line for line in lines[:6] if line.endswith(":")] == ["team-a:", "team-b:", "team-c:"]
    assert lines[-3:] == [
        "team-a: 2 create, 0 update, 0 delete",
        "team-b: 0 create, 1 update, 0 delete",
        "team-c: 1 create, 0 update, 0 delete",
    ]
    assert "plan: 3 create, 1 update, 0 delete; nothing was written" in err
