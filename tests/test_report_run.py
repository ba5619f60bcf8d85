"""After provision.py and runner.py take ReportWriteFailed / StateSaveFailed: a run whose
report or state file meets a full disk ends with the reason in its summary, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulk_secrets import Status, apply_secrets
from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .disks import fill
from .helpers import API_KEY, credentials, options, specs

pytestmark = pytest.mark.anyio
KEYS = EmulatorConfig(keys={API_KEY: None})
NO_SPACE = os.strerror(28)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
async def test_a_report_that_fills_the_disk_stops_the_run_with_the_reason(
    small_disk: Path, suffix: str
) -> None:
    report = small_disk / f"r{suffix}"
    async with running_emulator(KEYS) as server:
        summary = await apply_secrets(
            specs(1000),
            credentials=credentials(),
            options=options(server.base_url, concurrency=4),
            report=report,
        )
        written = server.stats.writes
    assert summary.stopped == f"report {report}: cannot write it: {NO_SPACE}; it is not complete"
    assert not summary.report_complete
    assert summary.total == 1000
    assert summary.count(Status.SUCCEEDED) == written < 1000
    assert summary.count(Status.NOT_ATTEMPTED) == 1000 - written


async def test_a_state_file_on_a_full_disk_is_named_in_the_summary(
    small_disk: Path, tmp_path: Path
) -> None:
    state = small_disk / "state.json"
    async with running_emulator(KEYS) as server:
        fill(small_disk)
        summary = await apply_secrets(
            specs(5),
            credentials=credentials(),
            options=options(server.base_url),
            report=tmp_path / "r.json",
            state=state,
        )
    assert summary.count(Status.SUCCEEDED) == 5
    assert summary.stopped == (
        f"state file {state}: cannot save it: {NO_SPACE}; it is left as it was"
    )
    assert '"stopped": "state file' in (tmp_path / "r.json").read_text()


async def test_a_state_file_in_a_missing_folder_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    from bulk_secrets import UsageError

    async with running_emulator(KEYS) as server:
        with pytest.raises(UsageError, match="there is no folder"):
            await apply_secrets(
                specs(5),
                credentials=credentials(),
                options=options(server.base_url),
                state=tmp_path / "nope" / "state.json",
            )
        assert server.stats.count() == 0
