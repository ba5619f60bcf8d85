"""Shards: three local shards of a 30-account manifest cover every secret exactly once, each
account listed by one shard only; the split is the same on every machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulk_secrets.emulator import EmulatorConfig, running_emulator
from bulk_secrets.sharding import Shard, parse_shard, shard_of

from .helpers import API_KEY, run_main

pytestmark = pytest.mark.anyio

ACCOUNTS = [f"team-{i:02d}" for i in range(30)]


async def test_three_shards_cover_every_secret_once(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"accounts: [{', '.join(ACCOUNTS)}]\n"
        'secrets: {EVAL_BUCKET: "gs://bucket", WANDB_API_KEY: "w"}\n'
    )
    results: list[dict[str, object]] = []
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for k in (1, 2, 3):
            report = tmp_path / f"shard-{k}.jsonl"
            code, _, err = await run_main(
                "apply", str(manifest), "--shard", f"{k}/3", "--base-url", server.base_url,
                "--max-rps", "0", "--report", str(report),
            )  # fmt: skip
            assert code == 0, err
            assert f"shard {k}/3: " in err
            lines = [json.loads(line) for line in report.read_text().splitlines()]
            summary = lines.pop()["summary"]
            assert summary["shard"] == f"{k}/3"
            assert {line["account"] for line in lines} == {
                a for a in ACCOUNTS if shard_of(a, 3) == k
            }
            results += lines
        assert server.stats.count(method="GET") == 30  # each account listed by one shard
        stored = {a: set(server.secrets(a)) for a in ACCOUNTS}
    pairs = [(r["account"], r["secretId"]) for r in results]
    assert len(pairs) == len(set(pairs)) == 60
    assert stored == {a: {"eval-bucket", "wandb-api-key"} for a in ACCOUNTS}


def test_the_split_is_stable_and_total() -> None:
    # SHA-256 of the id: these values hold on every machine and Python version.
    assert [shard_of(a, 3) for a in ("team-a", "team-b", "team-c")] == [1, 3, 3]
    for account in ACCOUNTS:
        owners = [k for k in (1, 2, 3) if Shard(k, 3).holds(account)]
        assert len(owners) == 1
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("0/3", "4/3", "1-3", "x/3", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


async def test_a_shard_without_accounts_exits_0_saying_so(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text('account: team-00\nsecrets: {A_KEY: "a"}\n')
    empty = next(k for k in (1, 2) if shard_of("team-00", 2) != k)
    code, _, err = await run_main("apply", str(manifest), "--shard", f"{empty}/2")
    assert code == 0
    assert f"shard {empty}/2 holds none of the manifests' accounts" in err
