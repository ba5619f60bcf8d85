"""The README's python blocks run verbatim against the emulator, so the example cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import anyio
import pytest

from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .helpers import API_KEY, ROOT, cli_env

pytestmark = pytest.mark.anyio

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
EXAMPLE_VALUES = ("sk-example-0000000000000000", "EXAMPLE-APPID", "evaluator:example")


def test_the_readme_has_a_sync_and_an_async_block() -> None:
    assert len(BLOCKS) == 2
    assert "bulk_secrets.apply(" in BLOCKS[0]
    assert "await bulk_secrets.apply_secrets(" in BLOCKS[1]


@pytest.mark.parametrize("block", BLOCKS, ids=["sync", "async"])
async def test_a_readme_block_applies_the_example_manifest(tmp_path: Path, block: str) -> None:
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    (tmp_path / "example.py").write_text(block)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        env = {
            **cli_env(),
            "FIREWORKS_BASE_URL": server.base_url,
            "FIREWORKS_ACCOUNT_ID": "readme-account",
        }
        result = await anyio.run_process(
            [sys.executable, "-X", "dev", "-W", "error", "example.py"],
            check=False,
            env=env,
            cwd=tmp_path,
        )
        stored = server.secrets("readme-account")
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "ResourceWarning" not in err
    assert "5 secrets: 5 succeeded" in out
    assert len(stored) == 5
    reports = [name for name in os.listdir(tmp_path) if name.startswith("report")]
    assert len(reports) == 1 and not reports[0].endswith(".partial")
    report = (tmp_path / reports[0]).read_text()
    for value in EXAMPLE_VALUES:
        assert value not in out + err + report
