"""The recipes in deploy/ run: each pod of the Kubernetes Indexed Job, and each job of the GitHub
Actions matrix, rendered from its file and run here against the emulator; together the shards
cover the manifest exactly once."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .helpers import API_KEY, ROOT, cli_env

pytestmark = pytest.mark.anyio

DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "secrets.yaml"
WANDB = "wandb-value-from-a-kubernetes-secret"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _env(server_url: str, **more: str) -> dict[str, str]:
    env = cli_env()
    env.update(FIREWORKS_BASE_URL=server_url, WANDB_API_KEY=WANDB, **more)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _sh(command: str, env: dict[str, str], cwd: Path) -> None:
    result = await anyio.run_process(["sh", "-c", command], env=env, cwd=cwd, check=False)
    assert result.returncode == 0, result.stderr.decode()


def _covered(reports: list[Path]) -> list[tuple[str, str]]:
    pairs = []
    for report in reports:
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert "summary" in lines.pop()
        pairs += [(r["account"], r["secretId"]) for r in lines if r["status"] == "succeeded"]
    return pairs


async def test_the_indexed_job_covers_the_manifest_once(tmp_path: Path) -> None:
    job = _load(DEPLOY / "kubernetes" / "job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] and spec["backoffLimitPerIndex"] >= 1
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FIREWORKS_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert int(env["SHARDS"]["value"]) == spec["completions"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    manifests, reports = tmp_path / "manifests", tmp_path / "reports"
    manifests.mkdir()
    reports.mkdir()
    shutil.copy(MANIFEST, manifests / "secrets.yaml")
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for index in range(spec["completions"]):
            pod = _env(
                server.base_url,
                JOB_COMPLETION_INDEX=str(index),
                SHARDS=env["SHARDS"]["value"],
                MANIFESTS=str(manifests),
                REPORTS=str(reports),
            )
            await _sh(script, pod, tmp_path)
        assert server.stats.count(method="GET") == 6  # each account listed by one pod
        stored = {a: server.secrets(a) for a in _load(MANIFEST)["accounts"]}
    pairs = _covered(sorted(reports.glob("shard-*.jsonl")))
    assert len(pairs) == len(set(pairs)) == 12
    assert all(s["wandb-api-key"] == ("WANDB_API_KEY", WANDB) for s in stored.values())


async def test_the_actions_matrix_covers_the_manifest_once(tmp_path: Path) -> None:
    workflow = _load(DEPLOY / "github-actions" / "shards.yml")
    job = workflow["jobs"]["apply"]
    shards = job["strategy"]["matrix"]["shard"]
    assert int(job["env"]["SHARDS"]) == len(shards)
    (step,) = [s for s in job["steps"] if s.get("name") == "apply"]
    checkout = tmp_path / "checkout"  # what actions/checkout leaves: the repository's files
    shutil.copytree(DEPLOY, checkout / "deploy")
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for shard in shards:
            script = step["run"].replace("${{ matrix.shard }}", str(shard))
            await _sh(script, _env(server.base_url, SHARDS=job["env"]["SHARDS"]), checkout)
        assert server.stats.count(method="GET") == 6
    pairs = _covered([checkout / f"shard-{shard}.jsonl" for shard in shards])
    assert len(pairs) == len(set(pairs)) == 12
