"""The CLI's stderr, as a log: lines for people, JSON lines for machines, silence for cron.

Every message is an *event*: a stable name (``listing``, ``applying``, ``failed``,
``account_stopped``, ``summary``, ``request``; ``message`` for free text), a level (``info``,
``warning``, ``error``), the text people read, and fields for machines. How it is written is
set once per command by :func:`configure`:

- text (the default): ``bulk-secrets: TEXT``, one line per event.
- ``--log-format json``: one JSON object per line, ``{"time": ISO-8601 UTC, "level", "event",
  "message", ...fields}``: every stderr line parses, for log shippers.
- ``--quiet``: only errors, and what is said ``always`` (the failures and the summary of a run
  that did not fully succeed): a run where every secret succeeded prints nothing.
- ``-v``: :class:`RequestLog` adds one event per HTTP request.

Text from a server or a manifest is escaped with :func:`printable` in both formats (in JSON,
every string field too), so no control character reaches a terminal, raw or through ``jq
-r``. Nothing here is handed a value or a key: events carry names, counts and reasons only.

While a live progress display draws on stderr, lines go above it (:func:`divert`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ..events import Observer, Request

Level = Literal["info", "warning", "error"]
LOG_FORMATS = ("text", "json")
PREFIX = "bulk-secrets: "

# What must not reach a terminal raw from a server or a manifest: C0 controls (ESC starts the
# ANSI sequences), DEL, C1, and the bidirectional overrides that reorder what is shown.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_TEXT = re.compile(f"[{_UNSAFE}]")
_UNSAFE_IN_FIELD = re.compile(f"[{_UNSAFE}\t\n]")


def printable(text: str, *, field: bool = False) -> str:
    """``text`` with every control character written as an escape (``\x1b``); a ``field``
    (one name, id or reason) keeps no newline or tab either, so it cannot fake a line."""
    pattern = _UNSAFE_IN_FIELD if field else _UNSAFE_IN_TEXT
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    quiet: bool = False
    verbose: bool = False
    json: bool = False


_DEFAULT = LogSettings()
# A context variable, not a global: main() run in a thread of a test process configures its
# own command only.
_settings: ContextVar[LogSettings] = ContextVar("bulk_secrets_log", default=_DEFAULT)


def configure(*, quiet: bool = False, verbose: bool = False, log_format: str = "text") -> None:
    """Set how this command's stderr is written: called once, before the first event."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")
    if quiet and verbose:
        raise ValueError("--quiet and --verbose ask for opposite things: pass one")
    _settings.set(LogSettings(quiet=quiet, verbose=verbose, json=log_format == "json"))


def configure_from(args: argparse.Namespace) -> None:
    """:func:`configure` from the flags of :func:`add_arguments`; a command without them
    sets their defaults (see :data:`DEFAULTS`)."""
    configure(quiet=args.quiet, verbose=args.verbose, log_format=args.log_format)


DEFAULTS = {"quiet": False, "verbose": False, "log_format": "text"}  # of a command without them


def settings() -> LogSettings:
    return _settings.get()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quiet``/``-q``, ``--verbose``/``-v`` and ``--log-format``."""
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on stderr when every secret succeeded; else the failures and the "
        "summary (errors always)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="one line per HTTP request: method, account, secret id, status, attempt, ms",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="json: every stderr line one JSON object (time, level, event, message, fields), "
        "the summary last (default: %(default)s)",
    )


class LineSink(Protocol):
    """Where lines go while a live display draws on stderr."""

    def write_line(self, line: str) -> None: ...

    def pause(self) -> None: ...


_diverted: LineSink | None = None  # a process has one stderr, and at most one live display


def divert(sink: LineSink | None) -> None:
    """Send stderr lines to ``sink`` (a live display, which prints them above itself); None:
    straight to stderr again."""
    global _diverted
    _diverted = sink


def emit(
    event: str,
    message: str,
    *,
    level: Level = "info",
    always: bool = False,
    **fields: Any,
) -> None:
    """Write one event on stderr. ``always``: written under ``--quiet`` too (the failures
    and the summary of a run that did not fully succeed); errors always are."""
    current = _settings.get()
    if current.quiet and not always and level != "error":
        return
    text = printable(message)
    if not current.json:
        _write(PREFIX + text)
        return
    record: dict[str, Any] = {"time": _now(), "level": level, "event": event, "message": text}
    for name, value in fields.items():
        record.setdefault(name, _safe(value))  # a field never replaces time, level, event
    _write(json.dumps(record, ensure_ascii=True, separators=(",", ":")))


def ask(question: str) -> None:
    """Ask on stderr, for an answer typed on the terminal: the question ends without a newline
    (in JSON, it is a ``confirm`` event). A live display is paused first; it goes on at the
    next phase."""
    if _diverted is not None:
        _diverted.pause()
    if _settings.get().json:
        emit("confirm", question.strip(), level="warning", always=True)
        return
    sys.stderr.write(printable(question))
    sys.stderr.flush()


def _write(line: str) -> None:
    if _diverted is not None:
        _diverted.write_line(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value, field=True)
    if isinstance(value, dict):
        return {printable(str(k), field=True): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(item) for item in value]
    return value


class RequestLog(Observer):
    """``-v``: one ``request`` event per HTTP request, once its answer came (or none did):
    method, account, secret id (``-`` for a page of a listing), status, attempt and
    milliseconds. A request holds no value and no key, and neither does its line."""

    requests = True

    def request(self, request: Request) -> None:
        ms = round(request.seconds * 1000)
        status = "no answer" if request.status is None else str(request.status)
        emit(
            "request",
            f"{request.method} {request.account} {request.secret_id or '-'} {status} "
            f"attempt {request.attempt} {ms} ms",
            method=request.method,
            account=request.account,
            secretId=request.secret_id or None,
            status=request.status,
            attempt=request.attempt,
            ms=ms,
        )
