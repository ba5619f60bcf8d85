"""Files written safely: checked before a run sends anything, created new and never through
a link. The report and the state file share these (stdlib only)."""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from pathlib import Path

from .errors import UsageError


def check_writable(path: Path, what: str) -> None:
    """Refuse, before anything is sent, a file that could not be written at ``path``: a
    folder that is missing or not writable, or a path that is a folder (or not a file).
    ``what`` names the file in the message: ``"report"``, ``"state file"``."""
    folder = path.parent
    try:
        if path.is_dir():
            raise UsageError(f"{what} {path}: is a folder; name a file")
        if not folder.is_dir():
            raise UsageError(f"{what} {path}: there is no folder {folder}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {path}: cannot write in the folder {folder}")
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write it: {exc.strerror}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise UsageError(f"{what} {path}: not a regular file")


def create_new(path: Path, mode: int) -> int:
    """A descriptor of a new file at ``path``, open to write and read back, of ``mode``
    (narrowed by the umask). A stale file or symlink of that name is removed first, never
    followed: nothing is written through a link, and the mode is never the stale file's."""
    try:
        stale = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISREG(stale) or stat.S_ISLNK(stale):
            with suppress(FileNotFoundError):
                os.unlink(path)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
