"""One call runs everything: paging through the planner, the report's whole life, and the one
error boundary, through the library against the emulator over loopback sockets."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_secrets import (
    Action,
    ApplyOptions,
    ManifestChanged,
    SecretSpec,
    Status,
    Target,
    UsageError,
    apply_secrets,
    load_manifests,
    plan_secrets,
    verify_secrets,
)
from bulk_secrets.emulator import EmulatorConfig, running_emulator
from bulk_secrets.planner import Plan
from bulk_secrets.provision import SpecList

from .helpers import ACCOUNT, API_KEY, CANARY, credentials, options, specs

pytestmark = pytest.mark.anyio

KEYS = EmulatorConfig(keys={API_KEY: None})


async def test_the_planner_pages_through_three_pages_with_quoted_tokens() -> None:
    """450 listed secrets: three pages of 200 at most, each token quoted into the URL."""
    wanted = specs(3)
    async with running_emulator(KEYS) as server:
        for i in range(450):
            server.put(ACCOUNT, f"s-{i:04d}", f"S_{i:04d}", "v")
        planned = await plan_secrets(
            wanted, credentials=credentials(), options=options(server.base_url, prune=True)
        )
        found = await verify_secrets(
            wanted, credentials=credentials(), options=options(server.base_url)
        )
        # Every token holds a '+', which the emulator reads as a space (a 400) unless quoted.
        assert server.stats.count(method="GET") == server.stats.count(method="GET", status=200)
        assert server.stats.count(method="GET") == 2 * 3  # plan and verify: three pages each
    deletions = [s.target.secret_id for s in planned.steps if s.action is Action.DELETE]
    assert deletions == [f"s-{i:04d}" for i in range(450)]
    assert [t.secret_id for t in found.unexpected] == deletions
    assert [t.secret_id for t in found.missing] == [s.secret_id for s in wanted]


async def test_a_declined_confirmation_leaves_a_complete_report_and_no_open_file(
    tmp_path: Path,
) -> None:
    report = tmp_path / "r.json"

    async def decline(plan: Plan) -> bool:
        return False

    async with running_emulator(KEYS) as server:
        server.put(ACCOUNT, "unnamed", "UNNAMED", "old")
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            with pytest.raises(UsageError, match="not confirmed"):
                await apply_secrets(
                    specs(5),
                    credentials=credentials(),
                    options=options(server.base_url, prune=True),
                    report=report,
                    confirm=decline,
                )
        assert server.stats.writes == 0
    data = json.loads(report.read_text())
    assert data["summary"]["not_attempted"] == 5
    assert os.listdir(tmp_path) == ["r.json"]  # no .partial, no .tmp


class _Changing:
    """A source whose specs fail after ``good`` of them, as a manifest edited mid-run does."""

    def __init__(self, wanted: list[SecretSpec], good: int, error: Exception) -> None:
        self._wanted = wanted
        self._good = good
        self._error = error
        self.started = 0.0
        self.count = len(wanted)
        self.excluded_count = 0
        self.shard = None

    def accounts(self) -> list[str]:
        return [ACCOUNT]

    def per_account(self) -> dict[str, int]:
        return {ACCOUNT: len(self._wanted)}

    def targets(self) -> list[Target]:
        return list(self._wanted)

    def specs(self) -> Iterator[SecretSpec]:
        yield from self._wanted[: self._good]
        raise self._error

    def verify_unchanged(self) -> None:
        pass

    def excluded(self) -> list[Target]:
        return []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(ManifestChanged("m.yaml"), "m.yaml changed", id="manifest-changed"),
        pytest.param(KeyError(CANARY), "internal error (KeyError)", id="a-bug"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
async def test_a_source_failing_mid_run_fails_the_secret_at_hand_and_reports_the_rest(
    tmp_path: Path, error: Exception, reason: str, suffix: str
) -> None:
    wanted = specs(60)
    report = tmp_path / f"r{suffix}"
    async with running_emulator(KEYS) as server:
        summary = await apply_secrets(
            _Changing(wanted, 25, error),
            credentials=credentials(),
            options=options(server.base_url, concurrency=4),
            report=report,
        )
        written = server.stats.writes
    assert summary.stopped is not None and reason in summary.stopped
    assert summary.aborted is None
    assert summary.total == 60
    assert summary.count(Status.FAILED) == 1
    assert summary.count(Status.SUCCEEDED) == written <= 25
    assert summary.count(Status.NOT_ATTEMPTED) == 60 - 1 - written
    text = report.read_text()
    assert CANARY not in text
    assert all(spec.secret_id in text for spec in wanted)


async def test_a_value_file_that_vanishes_mid_run_ends_with_a_complete_report(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "secrets:\n"
        "  - {keyName: A_KEY, fromFile: a.txt}\n"
        "  - {keyName: B_KEY, fromFile: b.txt}\n"
        "  - {keyName: C_KEY, value: c}\n"
    )
    manifests = load_manifests([str(manifest)], accounts=[ACCOUNT])
    report = tmp_path / "r.json"

    def vanish(plan: Plan) -> None:
        (tmp_path / "b.txt").unlink()

    async with running_emulator(KEYS) as server:
        summary = await apply_secrets(
            manifests,
            credentials=credentials(),
            options=ApplyOptions(base_url=server.base_url, concurrency=1, max_rps=0),
            report=report,
            on_planned=vanish,
        )
    results = {r["keyName"]: r for r in json.loads(report.read_text())["results"]}
    # A was read ahead with B, so it may have gone before B's file was found missing, or not.
    assert results["A_KEY"]["status"] in {"succeeded", "not_attempted"}
    assert results["B_KEY"]["status"] == "failed"
    assert "b.txt" in results["B_KEY"]["error"]
    assert results["C_KEY"]["status"] == "not_attempted"
    assert summary.stopped is not None and not summary.all_succeeded


class _Counted(SpecList):
    """Specs that count how many were read, with their values and without."""

    def __init__(self, wanted: list[SecretSpec]) -> None:
        super().__init__(wanted)
        self.values_read = 0
        self.targets_read = 0

    def targets(self) -> Iterator[SecretSpec]:
        for spec in super().targets():
            self.targets_read += 1
            yield spec

    def specs(self) -> Iterator[SecretSpec]:
        for spec in super().specs():
            self.values_read += 1
            yield spec


async def test_a_plan_is_made_as_it_is_read_and_reads_no_value_without_a_state(
    tmp_path: Path,
) -> None:
    source = _Counted(specs(50))
    async with running_emulator(KEYS) as server:
        planned = await plan_secrets(
            source, credentials=credentials(), options=options(server.base_url)
        )
        assert len(planned.steps) == 50 and source.targets_read == 0  # nothing decided yet
        steps = iter(planned.steps)
        first = next(steps)
        assert source.targets_read == 1
        assert not isinstance(first.target, SecretSpec)  # the value is not kept
        assert len(list(steps)) == 49 and source.values_read == 0
        kept = _Counted(specs(50))
        with_state = await plan_secrets(
            kept,
            credentials=credentials(),
            options=options(server.base_url),
            state=tmp_path / "state.json",
        )
        assert {s.action for s in with_state.steps} == {Action.CREATE}
        assert kept.values_read == 50  # for the state's fingerprints, then dropped
        assert all(not isinstance(s.target, SecretSpec) for s in with_state.steps)
