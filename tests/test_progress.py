"""The live progress display: drawn on a terminal (a pseudo-terminal here), never on a pipe
unless asked, without colour under NO_COLOR, and gone cleanly before the summary, whatever
ends the run. A small screen model replays what reached the terminal, so a garbled line shows.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import anyio
import pytest

from bulk_secrets.cli.progress import Progress
from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.models import Action, Result, Status

from .helpers import ACCOUNT, API_KEY, CANARY, ROOT, cli_env, run_cli, write_yaml_manifest

WIDTH = 120  # of the pseudo-terminal; the screen model does not wrap lines

# A run told to a display: two accounts listed, 120 results (3 failed), log lines between.
PROGRAM = """
import sys
from bulk_secrets.cli import logs
from bulk_secrets.cli.progress import progress_for
from bulk_secrets.models import Action, Result, Status

force = {"on": True, "off": False, "auto": None}[sys.argv[1]]
lines = int(sys.argv[2])
logs.configure(verbose=lines > 0)
with progress_for(force) as progress:
    progress.listing(2)
    logs.emit("applying", "applying 120 secrets")
    progress.applying(120)
    for i in range(120):
        status = Status.FAILED if i % 40 == 0 else Status.SUCCEEDED
        progress.result(Result(account="acct-1", key_name=f"K{i}", secret_id=f"k{i}",
                               location="m.yaml:1", action=Action.CREATE, status=status))
        if i < lines:
            logs.emit("request", f"line {i}")
    if sys.argv[3:] == ["raise"]:
        raise RuntimeError("the run broke")
logs.emit("summary", "120 secrets: 117 succeeded, 3 failed")
"""


def terminal_env(**more: str) -> dict[str, str]:
    env = cli_env()
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TERM"):
        env.pop(name, None)
    return {**env, "TERM": "xterm-256color", **more}


def run_on_terminal(
    argv: list[str], env: dict[str, str], *, until: str | None = None, then: int | None = None
) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pseudo-terminal of ``WIDTH`` columns; what it wrote
    there, and its exit code. With ``until``, once that text appeared, send it ``then``."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
            env=env, cwd=ROOT,
        )  # fmt: skip
    finally:
        os.close(follower)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if until is not None and then is not None and until.encode() in seen:
                process.send_signal(then)
                until = None
    finally:
        os.close(leader)
    return process.wait(), seen.decode()


def run_program(mode: str, *more: str, env: dict[str, str]) -> tuple[int, str]:
    return run_on_terminal([sys.executable, "-c", PROGRAM, mode, *more], env)


class Screen:
    """What a terminal shows after ``text``: enough of one for rich's live display (carriage
    return, newline, cursor up, erase line, cursor show/hide, colours ignored). Anything
    else fails the test, so that nothing unexpected passes unseen. Lines do not wrap: rich
    fits its frames to the width, and a long log line is above them."""

    def __init__(self, text: str) -> None:
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0
        self.cursor_shown = True
        for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|[\s\S]", text):
            if token.startswith("\x1b["):
                self._control(token)
            elif token == "\r":
                self.col = 0
            elif token == "\n":
                self._down()
                self.col = 0
            else:
                line = self.lines[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = token
                self.col += 1

    def _down(self) -> None:
        self.row += 1
        if self.row == len(self.lines):
            self.lines.append([])

    def _control(self, token: str) -> None:
        params, kind = token[2:-1], token[-1]
        if kind == "m":
            return
        if token in ("\x1b[?25l", "\x1b[?25h"):
            self.cursor_shown = token.endswith("h")
        elif kind == "A":
            self.row = max(0, self.row - int(params or 1))
        elif token == "\x1b[2K":
            self.lines[self.row] = []
        else:
            raise AssertionError(f"unexpected control sequence {token!r}")

    def text(self) -> list[str]:
        shown = ["".join(line).rstrip() for line in self.lines]
        while shown and not shown[-1]:
            shown.pop()
        return shown


def colours(text: str) -> list[str]:
    """The colours set by SGR sequences in ``text``."""
    found = []
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        codes = [int(code) for code in params.split(";") if code]
        while codes:
            code = codes.pop(0)
            if code in (38, 48):  # 38;5;N or 38;2;R;G;B
                found.append(str(code))
                del codes[: 2 if codes[:1] == [5] else 4]
            elif 30 <= code <= 37 or 40 <= code <= 47 or 90 <= code <= 97 or 100 <= code <= 107:
                found.append(str(code))
    return found


def test_a_terminal_shows_the_phase_the_counts_and_then_the_summary_below() -> None:
    code, seen = run_program("auto", "0", env=terminal_env())
    assert code == 0, seen
    assert "listing 2 accounts" in seen
    assert "applying" in seen and "0/120" in seen
    screen = Screen(seen)
    assert screen.cursor_shown
    shown = screen.text()
    assert shown[0] == "bulk-secrets: applying 120 secrets"
    assert shown[-1] == "bulk-secrets: 120 secrets: 117 succeeded, 3 failed"
    final = shown[-2]  # the last frame stays, on a line of its own
    assert final.startswith("applied ") and "120/120" in final and "3 failed" in final
    assert "secrets/s" in final
    assert len(shown) == 3


def test_log_lines_go_above_the_display_in_order() -> None:
    code, seen = run_program("auto", "100", env=terminal_env())
    assert code == 0, seen
    shown = Screen(seen).text()
    lines = [line for line in shown if line.startswith("bulk-secrets: line ")]
    assert lines == [f"bulk-secrets: line {i}" for i in range(100)]
    assert shown[-2].startswith("applied ") and "120/120" in shown[-2]
    assert shown[-1].startswith("bulk-secrets: 120 secrets")


def test_the_display_stops_cleanly_when_the_run_raises() -> None:
    code, seen = run_program("auto", "0", "raise", env=terminal_env())
    assert code == 1
    screen = Screen(seen)
    assert screen.cursor_shown
    shown = screen.text()
    frame = next(i for i, line in enumerate(shown) if line.startswith("applied "))
    assert shown[frame + 1] == "Traceback (most recent call last):"
    assert shown[-1] == "RuntimeError: the run broke"


def test_no_color_draws_without_colour() -> None:
    _, coloured = run_program("auto", "0", env=terminal_env())
    assert colours(coloured)  # the control: colours there are
    _, plain = run_program("auto", "0", env=terminal_env(NO_COLOR="1"))
    assert "120/120" in plain
    assert colours(plain) == []
    _, empty = run_program("auto", "0", env=terminal_env(NO_COLOR=""))
    assert colours(empty)  # NO_COLOR set but empty does not count


def test_no_progress_draws_nothing_even_on_a_terminal() -> None:
    code, seen = run_program("off", "0", env=terminal_env())
    assert code == 0
    assert "\x1b" not in seen and "120/120" not in seen
    assert seen.splitlines() == [
        "bulk-secrets: applying 120 secrets",
        "bulk-secrets: 120 secrets: 117 succeeded, 3 failed",
    ]


@pytest.mark.parametrize(("mode", "drawn"), [("auto", False), ("on", True), ("off", False)])
def test_a_pipe_is_drawn_on_only_when_asked(mode: str, drawn: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, "5"],
        capture_output=True, env=terminal_env(), cwd=ROOT, check=True,
    )  # fmt: skip
    err = done.stderr.decode()  # as bytes: text mode would turn each \r into \n
    assert ("\r" in err) is drawn
    assert ("\x1b[" in err) is drawn
    assert ("120/120" in err) is drawn
    assert [f"bulk-secrets: line {i}" in err for i in range(5)] == [True] * 5


def test_a_result_costs_a_count() -> None:
    progress = Progress(None)
    result = Result(
        account="a", key_name="K", secret_id="k", location="m:1",
        action=Action.CREATE, status=Status.NOT_ATTEMPTED,
    )  # fmt: skip
    with progress:
        progress.applying(2)
        progress.result(result)
        progress.result(result)
    assert (progress.done, progress.failed, progress.not_attempted) == (2, 0, 2)
    assert not progress.shown and not progress.requests


def test_a_display_not_shown_is_told_no_results() -> None:
    """Nothing but a display reads the counts: a run with none spares a call per secret."""
    assert not Progress(None).results
    assert Progress(io.StringIO()).results


# The real CLI against the emulator


@pytest.mark.anyio
async def test_the_cli_draws_on_a_terminal_and_never_a_value(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 120)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest),
                   "--account", ACCOUNT, "--base-url", server.base_url,
                   "--max-rps", "0"]  # fmt: skip
        code, seen = await anyio.to_thread.run_sync(run_on_terminal, command, terminal_env())
    assert code == 0, seen
    assert "1 account at" in seen and "applying" in seen
    screen = Screen(seen)
    assert screen.cursor_shown
    shown = screen.text()
    assert shown[-2].startswith("applied ") and "120/120" in shown[-2], shown
    assert shown[-1].startswith("bulk-secrets: 120 secrets: 120 succeeded"), shown
    assert CANARY not in seen and API_KEY not in seen


@pytest.mark.anyio
async def test_the_cli_draws_nothing_on_a_pipe(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 30)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, _, err = await run_cli(
            "apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url,
            env=terminal_env(),
        )  # fmt: skip
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err
    assert "30 secrets: 30 succeeded" in err


@pytest.mark.anyio
async def test_a_signal_leaves_the_terminal_clean_and_the_summary_below(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 400)
    slow = EmulatorConfig(keys={API_KEY: None}, faults=Faults(latency=0.05))
    async with running_emulator(slow) as server:
        command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest),
                   "--account", ACCOUNT, "--base-url", server.base_url, "--concurrency", "2",
                   "--report", str(tmp_path / "r.jsonl")]  # fmt: skip
        code, seen = await anyio.to_thread.run_sync(
            lambda: run_on_terminal(command, terminal_env(), until="applying", then=signal.SIGTERM)
        )
    assert code == 128 + signal.SIGTERM, seen
    screen = Screen(seen)
    assert screen.cursor_shown
    shown = screen.text()
    frame = max(i for i, line in enumerate(shown) if line.startswith("applied "))
    assert "/400" in shown[frame]
    after = shown[frame + 1 :]
    assert any(line.startswith("bulk-secrets: 400 secrets: ") for line in after), shown
    assert all(line.startswith("bulk-secrets: ") for line in after), shown


@pytest.mark.anyio
async def test_the_prune_question_is_asked_below_a_paused_display(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 3)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    seen = b""

    def read_and_answer() -> None:
        nonlocal seen
        answered = False
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(leader, b"n\n")
                answered = True

    try:
        async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
            server.put(ACCOUNT, "stray", "STRAY", "old")
            command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest),
                       "--account", ACCOUNT, "--base-url", server.base_url, "--prune"]  # fmt: skip
            reader = threading.Thread(target=read_and_answer)
            reader.start()
            process = await anyio.open_process(
                command, stdin=follower, stdout=subprocess.DEVNULL, stderr=follower,
                env=terminal_env(), cwd=ROOT,
            )  # fmt: skip
            os.close(follower)
            follower = -1
            async with process:
                code = await process.wait()
            await anyio.to_thread.run_sync(reader.join)
            assert server.stats.writes == 0
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    text = seen.decode()
    assert code == 2, text
    screen = Screen(text)
    assert screen.cursor_shown
    shown = screen.text()
    asked = next(i for i, line in enumerate(shown) if "Delete this 1 secret? [y/N]" in line)
    assert shown[asked].startswith("Delete this")  # on a line of its own
    assert shown[asked - 1].startswith("listed 1 account")  # the paused frame, above
