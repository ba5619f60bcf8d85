"""A live progress display on stderr, drawn with rich: the phase (``listing 3 accounts``, then
``applying``), done/total, the rate in secrets/s, the time left and the failures so far.

:func:`progress_for` gives the run's :class:`Progress`: an :class:`~bulk_secrets.events.Observer`
that is also a context manager, which starts the display and stops it on every ending (the
final frame stays, with a newline after it, so the summary printed next starts on a line of its
own). It also hands each request to ``-v``'s :class:`~.logs.RequestLog`.

Each result costs a counter increment: rich redraws from the counters on its own thread, four
times a second. This module alone imports rich, and only when a display is shown.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import threading
import time
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

from ..errors import UsageError
from ..events import Observer, Request
from ..models import FAILED, NOT_ATTEMPTED, Result
from . import logs
from .output import counted

if TYPE_CHECKING:  # rich loads only when a display is shown
    from rich.console import RenderableType
    from rich.live import Live
    from rich.spinner import Spinner

REFRESHES_PER_SECOND = 4
RATE_WINDOW = 10.0  # seconds: the rate is of the results in the last ones


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``; unset (None): shown when stderr is a terminal."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a live progress display on stderr (default: when stderr is a terminal, "
        "the log is text and not --quiet)",
    )


def progress_for(force: bool | None, stream: TextIO | None = None) -> Progress:
    """The CLI's observer of a run: a live display on ``stream`` (stderr) when ``force`` is
    True, never when False, and when None only if ``stream`` is a terminal, the log is text
    and not ``--quiet``. With ``-v`` it also logs each request (the lines go above the display).
    ``NO_COLOR`` (set, not empty) draws it without colour.

    Raises :class:`UsageError` for ``force`` with a JSON log, whose every stderr line is
    JSON."""
    stream = sys.stderr if stream is None else stream
    log = logs.settings()
    if force and log.json:
        raise UsageError(
            "--progress draws on stderr, which --log-format json keeps for JSON lines: "
            "pass one of them"
        )
    if force is None:
        force = _is_terminal(stream) and not (log.json or log.quiet)
    return Progress(
        stream if force else None,
        requests=logs.RequestLog() if log.verbose else None,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # no stream, or a closed one
        return False


class Progress(Observer):
    """Counts what a run tells and, given a ``stream``, draws them there while in its ``with``
    block: a phase (``listing``, ``applying``) redraws at once, results and log lines wait for
    the next frame. ``requests``: an observer told each request (``-v``)."""

    def __init__(self, stream: TextIO | None, *, requests: Observer | None = None) -> None:
        self.phase = ""
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self.not_attempted = 0
        self.requests = requests is not None  # the Gate times requests only when asked
        self.results = stream is not None  # counted only for a display: nothing else reads them
        self._requests = requests
        self._stream = stream
        self._live: Live | None = None
        self._drawer: _Drawer | None = None
        self._lines: collections.deque[str] = collections.deque()  # to print above the frame
        self._drawing = threading.Lock()  # one frame at a time: the drawer's, or a phase's
        self._paused = False
        self._still = False  # stopped or paused: the frame drawn last, past tense, no spinner
        self._started = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._spinner: Spinner | None = None

    @property
    def shown(self) -> bool:
        """Whether a display is drawn."""
        return self._stream is not None

    # The observer: a phase redraws at once; a result is counted only.

    def listing(self, accounts: int) -> None:
        self._phase(f"listing {counted(accounts, 'account')}")

    def applying(self, total: int) -> None:
        self.total = total
        self._samples.clear()
        self._phase("applying")

    def result(self, result: Result) -> None:
        self.done += 1
        status = result.status
        if status is FAILED:
            self.failed += 1
        elif status is NOT_ATTEMPTED:
            self.not_attempted += 1

    def request(self, request: Request) -> None:
        if self._requests is not None:
            self._requests.request(request)

    def _phase(self, phase: str) -> None:
        self.phase = phase
        self._started = time.monotonic()
        if self._paused:
            self._paused = False
            self._start()
        with contextlib.suppress(OSError):  # stderr gone: the run goes on
            self.draw()

    # The display's life: the with-block, and the line sink of logs while it draws.

    def __enter__(self) -> Self:
        if self._stream is not None:
            self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._paused = False
        self._stop()

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        assert self._stream is not None
        console = Console(
            file=self._stream,
            force_terminal=True,  # a terminal, or --progress asked for it anyway
            no_color=bool(os.environ.get("NO_COLOR")),
            highlight=False,
        )
        self._spinner = Spinner("dots", style="cyan")
        self._live = Live(
            console=console,
            renderable=_Frame(self),  # drawn anew at each print, not a snapshot
            auto_refresh=False,  # _Drawer refreshes, and prints the lines that came first
            redirect_stdout=False,  # stdout may be a file, a plan or JSON: left alone
            redirect_stderr=False,  # the CLI's own lines come through write_line
        )
        self._still = False
        self._live.start()
        logs.divert(self)
        self._drawer = _Drawer(self)
        self._drawer.start()

    def _stop(self) -> None:
        live, drawer = self._live, self._drawer
        if live is None or drawer is None:
            return
        drawer.stop()
        self._drawer = None
        logs.divert(None)
        self._still = True
        # The lines still to print, the final frame, a newline, and the cursor shown again; a
        # stderr that is gone (a closed pipe) has nothing more to show.
        with contextlib.suppress(OSError):
            if self._lines:  # and the last frame, which stop() draws again: a rare case
                self.draw()
        self._live = None
        with contextlib.suppress(OSError):
            live.stop()

    def write_line(self, line: str) -> None:
        """A line of the CLI's log: printed above the display at its next frame, so that a
        line costs an append (``-v`` may write hundreds a second)."""
        self._lines.append(line)

    def pause(self) -> None:
        """Stop drawing, the last frame left in place (for a question on stderr); the next
        phase draws again, below."""
        if self._live is not None:
            self._stop()
            self._paused = True

    def draw(self) -> None:
        """Print the lines that came, above a new frame (from the drawer's thread, or at a
        phase)."""
        with self._drawing:
            live = self._live
            if live is None:  # nothing drawn (stderr is no terminal): rich is not even imported
                return
            from rich.text import Text

            lines = self._lines
            if lines:
                taken = [lines.popleft() for _ in range(len(lines))]
                live.console.print(Text("\n".join(taken)), soft_wrap=True)  # and the frame
            else:
                live.refresh()

    # What is drawn, from the refresh thread.

    def _render(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        done, total = self.done, self.total
        row: list[RenderableType] = []
        still = self._still
        if not still and self._spinner is not None:
            row.append(self._spinner)
        phase = self.phase or "starting"
        if still:
            phase = "applied" if total is not None else phase.replace("listing", "listed")
        row.append(Text(phase, style="bold"))
        elapsed = now - self._started
        if total is None:  # listing
            row.append(Text(_duration(elapsed), style="dim"))
        else:
            if total:
                row.append(ProgressBar(total=total, completed=min(done, total), width=30))
            row.append(Text(f"{done:,}/{total:,}"))
            rate = self._rate(now, done)
            row.append(Text(f"{_per_second(rate)} secrets/s"))
            if still:
                row.append(Text(f"in {_duration(elapsed)}", style="dim"))
            else:
                left = (total - done) / rate if rate else None
                row.append(Text(f"ETA {_duration(left)}", style="dim"))
            row.append(Text(f"{self.failed:,} failed", style="red" if self.failed else "dim"))
            if self.not_attempted:
                row.append(Text(f"{self.not_attempted:,} not attempted", style="yellow"))
        grid = Table.grid(padding=(0, 1))
        grid.add_row(*row)
        return grid

    def _rate(self, now: float, done: int) -> float:
        """Results per second over the last ``RATE_WINDOW`` seconds (since the phase began,
        in its first second)."""
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 1 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        since, then = samples[0]
        if now - since < 1.0:
            since, then = self._started, 0
        seconds = now - since
        return (done - then) / seconds if seconds > 0 else 0.0


class _Frame:
    """What the display draws: the progress as it is when drawn."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __rich__(self) -> RenderableType:
        return self._progress._render()


class _Drawer(threading.Thread):
    """Draws a frame ``REFRESHES_PER_SECOND`` times a second until stopped."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(name="bulk-secrets-progress", daemon=True)
        self._progress = progress
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(1 / REFRESHES_PER_SECOND):
            with contextlib.suppress(OSError):  # stderr gone: nothing to show
                self._progress.draw()

    def stop(self) -> None:
        self._stopped.set()
        if self is not threading.current_thread():
            self.join()


def _per_second(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    return str(timedelta(seconds=round(seconds)))
