"""``fromCommand``: values printed by programs (a secret manager's client), run while the
manifests are checked, so that a failure is found before the first request.

Each command runs once, however many accounts its entry goes to, and:

- without a shell: the list is the program and its arguments, exactly;
- in the manifest's folder (where ``fromFile`` paths start), with this process's environment;
- with no input (``/dev/null``) and its stderr discarded: neither reaches the terminal;
- in a process group of its own, killed whole when it runs past the timeout or prints more
  than a value may hold (no more than that is ever read);
- at most :data:`MAX_PARALLEL` at a time, in threads: this runs before any event loop.

What it prints, less one trailing line break (``\\n`` or ``\\r\\n``), is the value, as UTF-8.
A problem names the program (its name only, never its arguments) and what went wrong: the exit
status, the timeout, the size; never what the program printed.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..models import SecretValue
from .document import FromCommand

MAX_PARALLEL = 8
DEFAULT_TIMEOUT = 30.0
_CHUNK = 64 * 1024
# A value at the size limit may be followed by its line break, "\r\n" at most: up to this many
# bytes more are read; one more than that, and the program is stopped.
_LINE_BREAK = 2


@dataclass(frozen=True, slots=True)
class Command:
    """A ``fromCommand`` to run, and the folder it runs in."""

    source: FromCommand
    folder: Path


class Failed(Exception):
    """Why a command gave no value; the message names the program only, never its output."""


def run_all(
    commands: Sequence[Command], *, limit: int, timeout: float
) -> list[SecretValue | Failed]:
    """Run every command, :data:`MAX_PARALLEL` at a time; for each, its value or why none.

    Interrupted (Ctrl-C), it stops every command still running before it returns."""
    if not commands:
        return []
    running = _Running()

    def run(command: Command) -> SecretValue | Failed:
        try:
            return _run(command, limit, timeout, running)
        except Failed as failed:
            return failed

    workers = min(MAX_PARALLEL, len(commands))
    with ThreadPoolExecutor(workers, thread_name_prefix="fromCommand") as pool:
        try:
            return list(pool.map(run, commands))
        except BaseException:
            running.stop_all()
            pool.shutdown(cancel_futures=True)
            raise


class _Running:
    """The processes running now, so that an interrupted check leaves none behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def add(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if not self._stopped:
                self._processes.add(process)
                return
        _kill(process)
        raise Failed("the check was interrupted")

    def discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop_all(self) -> None:
        with self._lock:
            self._stopped = True
            processes = list(self._processes)
        for process in processes:
            _kill(process)


def _run(command: Command, limit: int, timeout: float, running: _Running) -> SecretValue:
    argv = command.source.argv
    program = repr(command.source.program)
    deadline = time.monotonic() + timeout
    try:
        process = subprocess.Popen(  # noqa: S603  # the manifest's own command, as a list
            argv,
            cwd=command.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a group of its own, killed whole
        )
    except FileNotFoundError as exc:
        # Not shown: a name that is no program may be a value written in the wrong place.
        raise Failed(
            "fromCommand: the program is not found (its name is not shown, as it may be a "
            "value): is it installed, and on PATH?"
        ) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise Failed(
            f"fromCommand: the program cannot be run: {reason} "
            "(its name is not shown, as it may be a value)"
        ) from exc
    assert process.stdout is not None
    try:
        running.add(process)
        try:
            data = _read(process.stdout.fileno(), limit + _LINE_BREAK + 1, deadline)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise Failed(f"fromCommand: cannot read what {program} printed: {reason}") from None
        if data is None:
            raise Failed(f"fromCommand: {program} timed out after {timeout:g}s; it was stopped")
        value = _without_line_break(data)
        if len(value) > limit:
            raise Failed(
                f"fromCommand: {program} printed more than the limit of {limit} "
                f"{_bytes(limit)}; it was stopped"
            )
        try:
            status = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise Failed(
                f"fromCommand: {program} timed out after {timeout:g}s; it was stopped"
            ) from None
        if status != 0:
            raise Failed(f"fromCommand: {program} {_ended(status)}")
        try:
            return SecretValue(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise Failed(
                f"fromCommand: what {program} printed is not UTF-8 text (byte {exc.start})"
            ) from None
    finally:
        if process.returncode is None:  # not reaped: stopped early, or its group still runs
            _kill(process)
        process.wait()
        process.stdout.close()
        running.discard(process)


def _read(fd: int, cap: int, deadline: float) -> bytes | None:
    """What the program prints until it closes its output, up to ``cap`` bytes; None when the
    deadline passes first."""
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while size < cap:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, min(_CHUNK, cap - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def _without_line_break(data: bytes) -> bytes:
    """The output less one trailing line break: what ``echo`` or ``print`` adds."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def _ended(status: int) -> str:
    if status > 0:
        return f"exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"was killed by {name}"


def _bytes(count: int) -> str:
    return "byte" if count == 1 else "bytes"


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the program and whatever it started in its group. The group is killed while its
    leader is not yet reaped, so that its id cannot have gone to another group."""
    killpg = getattr(os, "killpg", None)
    try:
        if killpg is not None:
            killpg(process.pid, signal.SIGKILL)
        else:  # pragma: no cover - no process groups (Windows)
            process.kill()
    except OSError:
        pass  # it has ended already
