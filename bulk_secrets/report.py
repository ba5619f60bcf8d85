"""Results out: a running summary, and reports in JSON, JSONL or CSV written as results arrive.

Reports write an allow-list of fields (:meth:`Result.to_record`); no value ever reaches them.

- JSON: ``{"summary": {...}, "results": [...]}``. Results stream to ``PATH.partial`` and the
  final file replaces it atomically when the run ends.
- JSONL: one result per line, written as results arrive (flushed once per event-loop turn),
  so a killed run leaves every finished result on disk; the last line is ``{"summary": ...}``.
- CSV: a header, then one row per result, flushed the same way.

Files are written safely. A temporary (``PATH.partial``, ``PATH.tmp``) is always a new file:
a stale one of that name, file or symlink, is removed first, never followed. The final rename
replaces whatever is at ``PATH``, a symlink included, rather than writing through it; a JSONL or
CSV report that is a symlink is replaced the same way. A write that fails (disk full, I/O error)
raises :class:`ReportWriteFailed`, once; the report then takes no more writes, and a JSON report
leaves the previous one at ``PATH`` as it was.

:func:`read_done` reads what any run leaves, finished or killed, for ``--only-failed``;
:func:`read_results` reads every result of one the same way, for ``bulk-secrets report``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from .errors import ReportWriteFailed, UsageError
from .files import check_writable, create_new
from .models import FAILED, Action, Result, Status

FIELDS = (
    "account",
    "keyName",
    "secretId",
    "location",
    "action",
    "status",
    "httpStatus",
    "attempts",
    "error",
)

# Reports hold no value: readable by others as before, writable by no one else (the umask
# narrows it further). The state file, which holds fingerprints, is 0600.
REPORT_MODE = 0o644

FAILURES_KEPT = 1_000  # failures the summary keeps (--output json), whatever the run's size
# Lines a report holds before it hands them to its file: written together at the end of each
# event-loop turn, or sooner past this many (a run that settles every secret in one turn).
_BATCH = 256


@dataclass(repr=False)
class Summary:
    """Counts of a run, kept as results arrive: its size does not grow with the manifest.

    Its ``repr`` is the one-line summary, not every field: the counts by account would make
    it as long as the run is wide, and asyncio formats a run's result whenever it describes
    the task (``asyncio.run`` does, restoring its SIGINT handler).

    A result is counted once, by account, status and action, in a plain dict: the counts by
    status, by action and by account are worked out from it when first asked after a result
    (at the end of a run), together, and kept until the next result. A Counter's increment
    costs about three times a dict's, and each result made three. What the properties give is
    the summary's own: read it, do not change it."""

    requests: int = 0  # HTTP requests sent, listing included
    retries: int = 0  # of those, the ones that repeated a failed request
    aborted: str | None = None  # a global fault stopped the run: the API key was rejected
    stopped: str | None = None  # the run itself failed (a manifest changed, a bug)
    stopped_accounts: dict[str, str] = field(default_factory=dict)  # account -> why it stopped
    report_complete: bool = True  # False: the report could not be written whole
    shard: str | None = None  # "K/N" when the run took one shard of the accounts
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_failures: list[Result] = field(default_factory=list)  # at most FAILURES_KEPT
    # (account, status, action) -> results
    _counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # The counts by status, by action and by account, worked out from ``_counts``; None once a
    # result came after them.
    _views: _Views | None = field(default=None, compare=False)

    def add(self, result: Result) -> None:
        status = result.status
        key = (result.account, status._value_, result.action._value_)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self._views = None
        if status is FAILED and len(self.first_failures) < FAILURES_KEPT:
            self.first_failures.append(result)

    @property
    def by_status(self) -> Counter[str]:
        """Results by status."""
        return self._worked_out().by_status

    @property
    def by_action(self) -> Counter[str]:
        """Results by action, those not attempted left out."""
        return self._worked_out().by_action

    @property
    def by_account(self) -> dict[str, Counter[str]]:
        """Results by account (in order of first result), each by status."""
        return self._worked_out().by_account

    def _worked_out(self) -> _Views:
        views = self._views
        if views is None:
            views = self._views = _Views(Counter(), Counter(), {})
            for (account, status, action), count in self._counts.items():
                views.by_status[status] += count
                if status != _NOT_ATTEMPTED_NAME:
                    views.by_action[action] += count
                tally = views.by_account.get(account)
                if tally is None:
                    tally = views.by_account[account] = Counter()
                tally[status] += count
        return views

    @property
    def total(self) -> int:
        return self.by_status.total()

    def count(self, status: Status) -> int:
        return self.by_status[status.value]

    @property
    def all_succeeded(self) -> bool:
        """True when nothing failed and nothing was left undone."""
        return not (
            self.aborted
            or self.stopped
            or self.count(Status.FAILED)
            or self.count(Status.NOT_ATTEMPTED)
        )

    @property
    def duration(self) -> float:
        end = time.monotonic() if self.finished is None else self.finished
        return end - self.started

    def to_record(self) -> dict[str, Any]:
        return {
            "total": self.total,
            **{status.value: self.count(status) for status in Status},
            "byAction": dict(sorted(self.by_action.items())),
            "requests": self.requests,
            "retries": self.retries,
            "durationSeconds": round(self.duration, 3),
            "aborted": self.aborted,
            "stopped": self.stopped,
            "shard": self.shard,
        }

    def __repr__(self) -> str:
        return f"<Summary {self.line()}>"

    def line(self) -> str:
        """The one-line summary for stderr."""
        parts = ", ".join(
            f"{self.count(status)} {status.value.replace('_', ' ')}" for status in Status
        )
        text = (
            f"{counted(self.total, 'secret')}: {parts} ({counted(self.requests, 'request')}, "
            f"{counted(self.retries, 'retry', 'retries')}, {self.duration:.2f}s)"
        )
        if self.aborted:
            text += f"; aborted: {self.aborted}"
        elif self.stopped:
            text += f"; stopped: {self.stopped}"
        return text if self.shard is None else f"shard {self.shard}: {text}"


_NOT_ATTEMPTED_NAME = Status.NOT_ATTEMPTED.value


@dataclass(slots=True)
class _Views:
    """A summary's counts, worked out together (see :class:`Summary`)."""

    by_status: Counter[str]
    by_action: Counter[str]
    by_account: dict[str, Counter[str]]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 secret``, ``2 secrets``; ``plural`` where adding ``s`` is wrong (``retries``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


_text = json.encoder.encode_basestring_ascii  # the C encoder json.dumps uses


def json_line(result: Result) -> str:
    """``json.dumps(result.to_record())``, built directly: this runs once per secret. (The
    status code goes into the f-string as a number: a ``str()`` of it costs a call.)"""
    http_status, error = result.http_status, result.error
    return (
        f'{{"account": {_text(result.account)}, "keyName": {_text(result.key_name)}, '
        f'"secretId": {_text(result.secret_id)}, "location": {_text(result.location)}, '
        f'"action": "{result.action._value_}", "status": "{result.status._value_}", '
        f'"httpStatus": {"null" if http_status is None else http_status}, '
        f'"attempts": {result.attempts}, "error": {"null" if error is None else _text(error)}}}'
    )


def _open_emptied(path: Path) -> int:
    """The report file at ``path``, emptied, never through a link: a symlink there is replaced
    by a file of its own (as a JSON report's final rename replaces one)."""
    if path.is_symlink():
        return create_new(path, REPORT_MODE)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, REPORT_MODE)


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


# Sinks


class ReportSink:
    """Where results go, as a context manager: leaving the ``with`` block closes the file,
    whether or not the report was finished. This one writes nothing: no report was asked for.

    ``failed`` is the first :class:`ReportWriteFailed` the report met, if any.
    """

    failed: ReportWriteFailed | None = None

    def write(self, result: Result) -> None:
        """Add one result; raises :class:`ReportWriteFailed` once, on the first failure."""

    def finish(self, summary: Summary) -> None:
        """Write the summary and put the report in place; the file is closed after it.
        Raises :class:`ReportWriteFailed` when the report is not complete."""

    def close(self) -> None:
        """Close the file, finished or not; an unfinished JSON report leaves nothing behind.
        Never raises: a failure met here is kept in ``failed``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _FileReport(ReportSink):
    """A report file written and flushed at the end of each event-loop turn in which it was
    written: so a killed run keeps every result finished before its last turn, for one write
    per turn, not one per line. (anyio has no end-of-turn callback: this is asyncio's
    ``call_soon``.) Until then a result is a line of text in ``_lines`` (at most ``_BATCH``:
    past that they go to the file at once), which ``_drain`` hands to the file.

    The first failure to write, flush or finish is kept in ``failed`` and closes the file;
    writes after it do nothing. ``write`` and ``finish`` raise it when they meet it; the
    end-of-turn flush cannot raise, so the next ``write`` (or ``finish``) raises what it met.
    """

    def __init__(self, path: Path, file: IO[Any]) -> None:
        self._path = path
        self._file = file
        self._lines: list[str] = []  # not handed to the file yet
        self._flush_due = False
        self._unraised = False  # a failure the end-of-turn flush met, not raised yet

    def write(self, result: Result) -> None:
        if self.failed is not None:
            if self._unraised:
                self._unraised = False
                raise self.failed
            return
        try:
            self._lines.append(self._line(result))
            if not self._flush_due:
                self._flush_at_end_of_turn()
            elif len(self._lines) >= _BATCH:
                self._drain()
        except OSError as exc:
            raise self._fail(exc) from exc

    def finish(self, summary: Summary) -> None:
        if self.failed is None:
            try:
                self._end(summary)
            except OSError as exc:
                self._fail(exc)
        if self.failed is not None:
            self._unraised = False
            self.close()
            raise self.failed

    def close(self) -> None:
        if not self._file.closed:
            try:
                if self.failed is None:
                    self._drain()
                self._file.close()  # what was written stays: every result finished so far
            except OSError as exc:
                self._fail(exc)

    # The result's line: its JSON, unless the format says otherwise.
    _line: Callable[[Result], str] = staticmethod(json_line)

    def _drain(self) -> None:
        """Hand ``_lines`` to the file (buffered, not flushed), and empty it."""
        lines = self._lines
        if lines:
            text = self._joined(lines)
            lines.clear()
            self._file.write(text)

    def _joined(self, lines: list[str]) -> str | bytes:
        """What the file gets for ``lines`` (which it may change: they are emptied next)."""
        raise NotImplementedError

    def _end(self, summary: Summary) -> None:
        raise NotImplementedError

    def _flush_at_end_of_turn(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: written and flushed at once
            self._drain()
            self._file.flush()
            return
        loop.call_soon(self._flush)
        self._flush_due = True

    def _flush(self) -> None:
        self._flush_due = False
        if self.failed is None and not self._file.closed:
            try:
                self._drain()
                self._file.flush()
            except OSError as exc:  # a callback of the loop: kept for the next write
                self._fail(exc)
                self._unraised = True

    def _fail(self, exc: OSError) -> ReportWriteFailed:
        if self.failed is None:
            self.failed = ReportWriteFailed(self._path, exc)
        with suppress(OSError):  # closing flushes what is left, and may meet the failure again
            self._file.close()
        return self.failed


class JsonReport(_FileReport):
    def __init__(self, path: Path) -> None:
        self._partial = _sibling(path, ".partial")
        self._temporary = _sibling(path, ".tmp")
        super().__init__(path, os.fdopen(create_new(self._partial, REPORT_MODE), "w+b"))
        self._separator = "\n"  # before the next line: the first one's, then ",\n"

    def _joined(self, lines: list[str]) -> bytes:
        text = self._separator + ",\n".join(lines)
        self._separator = ",\n"
        return text.encode()  # ASCII

    def _end(self, summary: Summary) -> None:
        head = '{"summary": ' + json.dumps(summary.to_record()) + ',\n"results": ['
        self._drain()
        self._file.flush()
        self._file.seek(0)
        try:
            with os.fdopen(create_new(self._temporary, REPORT_MODE), "wb") as out:
                out.write(head.encode())
                shutil.copyfileobj(self._file, out, 1 << 20)
                out.write(b"\n]}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(self._temporary, self._path)  # the one change to PATH, at the very end
        except OSError:
            with suppress(OSError):
                self._temporary.unlink(missing_ok=True)
            raise
        self._file.close()
        with suppress(OSError):  # older than the report now: read_done would pass it over
            self._partial.unlink()

    def close(self) -> None:
        super().close()
        with suppress(OSError):  # finished: in place already; else never finished
            self._partial.unlink(missing_ok=True)


class JsonlReport(_FileReport):
    def __init__(self, path: Path) -> None:
        super().__init__(path, os.fdopen(_open_emptied(path), "w", encoding="utf-8"))

    def _joined(self, lines: list[str]) -> str:
        lines.append("")  # so that the last line ends too
        return "\n".join(lines)

    def _end(self, summary: Summary) -> None:
        self._drain()
        self._file.write(json.dumps({"summary": summary.to_record()}) + "\n")
        self._file.close()


class CsvReport(_FileReport):
    """Rows as ``csv.DictWriter`` of :meth:`Result.to_record` writes them (None an empty
    cell), from a plain ``csv.writer`` that gives the row back as text (see :class:`_Echo`)."""

    def __init__(self, path: Path) -> None:
        file = os.fdopen(_open_emptied(path), "w", encoding="utf-8", newline="")
        super().__init__(path, file)
        csv.writer(file).writerow(FIELDS)
        self._row = csv.writer(_Echo()).writerow

    def _line(self, result: Result) -> str:
        row: str = self._row(
            (
                result.account,
                result.key_name,
                result.secret_id,
                result.location,
                result.action._value_,
                result.status._value_,
                result.http_status,
                result.attempts,
                result.error,
            )
        )
        return row

    def _joined(self, lines: list[str]) -> str:
        return "".join(lines)  # each row ends its own line

    def _end(self, summary: Summary) -> None:
        self._drain()
        self._file.close()


class _Echo:
    """What ``csv.writer`` writes to: nothing is kept, and ``writerow`` returns what
    ``write`` does, the row as text."""

    __slots__ = ()
    write = staticmethod(str)  # str(text) is text itself


_BY_SUFFIX: dict[str, type[JsonReport | JsonlReport | CsvReport]] = {
    ".json": JsonReport,
    ".jsonl": JsonlReport,
    ".csv": CsvReport,
}


def open_report(path: Path | None) -> ReportSink:
    """A report writer chosen by the file's suffix (.json, .jsonl or .csv), to use in a
    ``with`` block; with no path, one that writes nothing."""
    if path is None:
        return ReportSink()
    check_report_path(path)
    kind = _BY_SUFFIX[path.suffix.lower()]
    try:
        return kind(path)
    except OSError as exc:
        raise UsageError(f"report {path}: cannot write it: {exc.strerror}") from exc


def check_report_path(path: Path | None) -> None:
    """Refuse, before anything is sent, a report name of an unknown kind or that could not be
    written (see :func:`check_writable`)."""
    if path is None:
        return
    if path.suffix.lower() not in _BY_SUFFIX:
        raise UsageError(f"report {path}: use a .json, .jsonl or .csv file name")
    check_writable(path, "report")


# Reading a report back, for --only-failed


@dataclass(frozen=True, slots=True)
class Done:
    """What an earlier report shows: the (account, secretId) of each result that succeeded or
    was skipped, how many results it holds in all, and the file they were read from (a JSON
    report's ``.partial`` when its run did not finish). ``(account, secret_id) in done`` asks
    whether one secret is done."""

    keys: frozenset[tuple[str, str]]
    total: int
    source: Path

    def __contains__(self, key: object) -> bool:
        return key in self.keys


_DONE = frozenset({Status.SUCCEEDED.value, Status.SKIPPED.value})
_READ = ("account", "secretId", "status")  # the fields --only-failed needs of a result
_PARTIAL = ".partial"


def read_done(path: Path) -> Done:
    """What an earlier report shows done (succeeded or skipped); ``--only-failed`` runs
    everything else again: what failed, what was not attempted, what a killed run never reached.

    Any report is read, finished or left by a killed run: JSON, JSONL (with or without its
    summary line), CSV, each maybe cut short in its last line, which is then passed over. For a
    ``.json`` report whose run did not finish (its ``.partial`` is there, and newer than the
    report or the report is missing), the results in the ``.partial`` are read.
    """
    source, kind = _to_read(path)
    keys: set[tuple[str, str]] = set()
    total = 0
    with _reading(source) as file:
        for where, record in _records_of(file, kind):
            result = _result_of(where, record)
            if result is None:
                continue  # a JSONL report's summary line
            account, secret_id, status = result
            total += 1
            if status in _DONE:
                keys.add((account, secret_id))
    return Done(frozenset(keys), total, source)


@dataclass(frozen=True, slots=True)
class ReportResults:
    """Every result of one report, read one at a time, in the report's order, as
    :func:`read_done` reads it: finished or left by a killed run. ``source`` is the file read (a
    JSON report's ``.partial`` when its run did not finish). Iterating reads the file again;
    a file that cannot be read, or a result that is not whole, raises :class:`UsageError`
    naming ``source``."""

    source: Path
    kind: str

    def __iter__(self) -> Iterator[Result]:
        with _reading(self.source) as file:
            for where, record in _records_of(file, self.kind):
                if _result_of(where, record) is not None:  # not a JSONL report's summary
                    yield _whole_result(where, record)


def read_results(path: Path) -> ReportResults:
    """The results of the report named ``path``, of any format, finished or left by a killed
    run (see :func:`read_done`): every field a report writes, as a :class:`Result`."""
    source, kind = _to_read(path)
    return ReportResults(source, kind)


@contextmanager
def _reading(source: Path) -> Iterator[IO[str]]:
    """``source`` open to read; what goes wrong reading it is a :class:`UsageError` naming it."""
    try:
        # A kill may cut the last character in two: its row is passed over, or it is an error.
        with source.open(encoding="utf-8", errors="replace", newline="") as file:
            yield file
    except OSError as exc:
        raise UsageError(f"report {source}: cannot read it: {exc.strerror}") from exc
    except (ValueError, csv.Error) as exc:  # json.JSONDecodeError is a ValueError
        raise UsageError(
            f"report {source}: cannot read it as a bulk-secrets report ({exc})"
        ) from exc


def _to_read(path: Path) -> tuple[Path, str]:
    """The file to read for the report named ``path``, and its kind."""
    suffix = path.suffix.lower()
    if suffix == _PARTIAL and path.stem.lower().endswith(".json"):
        return path, _PARTIAL
    if suffix not in _BY_SUFFIX:
        raise UsageError(f"report {path}: not a .json, .jsonl or .csv report")
    if suffix == ".json":
        partial = _sibling(path, _PARTIAL)
        with suppress(OSError):
            left = partial.stat().st_mtime
            if not path.exists() or left >= path.stat().st_mtime:
                return partial, _PARTIAL  # the last run did not finish: resume it
    return path, suffix


_Record = tuple[str, Any]  # where it is (for messages), and what was read there


def _records_of(file: IO[str], kind: str) -> Iterator[_Record]:
    if kind == ".json":
        data = json.load(file)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise ValueError("no list of results")
        return ((f"result {i + 1}", record) for i, record in enumerate(results))
    if kind == ".csv":
        return _csv_records(file)
    return _line_records(file, partial=kind == _PARTIAL)


def _line_records(file: IO[str], *, partial: bool) -> Iterator[_Record]:
    """One JSON record a line (a ``.partial`` ends each but its last with ``,``). The last line,
    when no newline ends it, may have been cut short by a kill: if it does not parse, it is
    passed over."""
    for number, line in enumerate(file, 1):
        text = line.rstrip("\n")
        if partial:
            text = text.removesuffix(",")
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError:
            if not line.endswith("\n"):  # the last line, cut short
                return
            raise ValueError(f"line {number} is not JSON") from None
        yield f"line {number}", record


def _csv_records(file: IO[str]) -> Iterator[_Record]:
    """Rows under the header. A row without all the header's columns, which a kill leaves
    last, is passed over there; a header cut short means no rows were written."""
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None:
        return
    rows = iter(reader)
    row = next(rows, None)
    if row is None and ",".join(FIELDS).startswith(",".join(header)):
        return  # nothing but a header, maybe cut short
    if not set(_READ) <= set(header):
        raise ValueError(f"no {', '.join(_READ)} columns")
    while row is not None:
        where = f"line {reader.line_num}"
        after = next(rows, None)
        if len(row) < len(header):
            if after is None:
                return  # the last row, cut short
            raise ValueError(f"{where}: {len(row)} columns, not {len(header)}")
        yield where, dict(zip(header, row, strict=False))
        row = after


def _result_of(where: str, record: Any) -> tuple[str, str, str] | None:
    """(account, secretId, status) of a result; None for a JSONL report's summary line."""
    if isinstance(record, dict):
        if record.keys() == {"summary"}:
            return None
        account, secret_id, status = (record.get(name) for name in _READ)
        if isinstance(account, str) and isinstance(secret_id, str) and isinstance(status, str):
            return account, secret_id, status
    raise ValueError(f"{where}: not a bulk-secrets result")


_ACTIONS = frozenset(action.value for action in Action)
_STATUSES = frozenset(status.value for status in Status)


def _whole_result(where: str, record: dict[str, Any]) -> Result:
    """A result with every field a report writes; a CSV report's are text (an empty cell is
    null). ``location``, ``httpStatus``, ``attempts`` and ``error`` may be missing."""

    def text(name: str) -> str:
        value = record.get(name)
        if not isinstance(value, str):
            raise ValueError(f"{where}: no {name}")
        return value

    def number(name: str) -> int | None:
        value = record.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError(f"{where}: {name} is not a number")

    account, key_name, secret_id = text("account"), text("keyName"), text("secretId")
    action, status = text("action"), text("status")
    if action not in _ACTIONS:
        raise ValueError(f"{where}: unknown action {action!r}")
    if status not in _STATUSES:
        raise ValueError(f"{where}: unknown status {status!r}")
    location, error = record.get("location"), record.get("error")
    if not isinstance(location, str | None) or not isinstance(error, str | None):
        raise ValueError(f"{where}: location and error must be text")
    return Result(
        account=account,
        key_name=key_name,
        secret_id=secret_id,
        location=location or "",
        action=Action(action),
        status=Status(status),
        http_status=number("httpStatus"),
        attempts=number("attempts") or 0,
        error=error or None,
    )
