from __future__ import annotations

import compileall
from collections.abc import Iterator
from pathlib import Path

import pytest

from .disks import mounted

PACKAGE = Path(__file__).resolve().parent.parent / "bulk_secrets"


def pytest_configure(config: pytest.Config) -> None:
    """Many tests start the CLI as a process of its own. Let each load the package from
    bytecode, even where PYTHONDONTWRITEBYTECODE is set: compiling it again costs each process
    about 0.3 s of CPU. Done once, by the controller when the tests run in parallel."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(PACKAGE, quiet=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 64 KiB filesystem of its own (a tmpfs: skipped where none can be
    mounted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    with mounted(folder, "size=64k"):
        yield folder
