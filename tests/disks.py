"""A real full disk for the tests: a small tmpfs, where one can be mounted (as root)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest


class mounted:
    """A tmpfs mounted on ``folder`` for the block; skips the test where that is not allowed."""

    def __init__(self, folder: Path, options: str) -> None:
        self._folder = folder
        self._options = options

    def __enter__(self) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        command = ["mount", "-t", "tmpfs", "-o", self._options, "tmpfs", str(self._folder)]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        return self._folder

    def __exit__(self, *exc_info: object) -> None:
        if subprocess.run(["umount", str(self._folder)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self._folder)], check=True)


def fill(folder: Path) -> None:
    """Take every free block of the filesystem ``folder`` is on."""
    with (folder / "filler").open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
