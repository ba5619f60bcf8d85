"""Results out: a running summary, and reports in JSON, JSONL or CSV written as results arrive.

Reports write an allow-list of fields (:meth:`Result.to_record`); no value ever reaches them.

- JSON: ``{"summary": {...}, "results": [...]}``. Results stream to ``PATH.partial`` and the
  final file replaces it atomically when the run ends.
- JSONL: one result per line, written as results arrive (flushed once per event-loop turn),
  so a killed run leaves every finished result on disk; the last line is ``{"summary": ...}``.
- CSV: a header, then one row per result, flushed the same way.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from .errors import UsageError
from .models import Result, Status

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


FAILURES_KEPT = 20  # failures the summary keeps to show, whatever the run's size


@dataclass
class Summary:
    """Counts of a run, kept as results arrive: its size does not grow with the manifest."""

    by_status: Counter[str] = field(default_factory=Counter)
    by_action: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # HTTP requests sent, listing included
    retries: int = 0  # of those, the ones that repeated a failed request
    aborted: str | None = None  # a global fault stopped the run: the API key was rejected
    stopped: str | None = None  # the run itself failed (a manifest changed, a bug)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_failures: list[Result] = field(default_factory=list)  # at most FAILURES_KEPT

    def add(self, result: Result) -> None:
        status = result.status
        self.by_status[status._value_] += 1
        if status is not Status.NOT_ATTEMPTED:
            self.by_action[result.action._value_] += 1
        if status is Status.FAILED and len(self.first_failures) < FAILURES_KEPT:
            self.first_failures.append(result)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

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
        }

    def line(self) -> str:
        """The one-line summary for stderr."""
        parts = ", ".join(
            f"{self.count(status)} {status.value.replace('_', ' ')}" for status in Status
        )
        text = (
            f"{self.total} secrets: {parts} "
            f"({self.requests} requests, {self.retries} retries, {self.duration:.2f}s)"
        )
        if self.aborted:
            text += f"; aborted: {self.aborted}"
        elif self.stopped:
            text += f"; stopped: {self.stopped}"
        return text


_text = json.encoder.encode_basestring_ascii  # the C encoder json.dumps uses


def json_line(result: Result) -> str:
    """``json.dumps(result.to_record())``, built directly: this runs once per secret."""
    http_status = "null" if result.http_status is None else str(result.http_status)
    error = "null" if result.error is None else _text(result.error)
    return (
        f'{{"account": {_text(result.account)}, "keyName": {_text(result.key_name)}, '
        f'"secretId": {_text(result.secret_id)}, "location": {_text(result.location)}, '
        f'"action": "{result.action._value_}", "status": "{result.status._value_}", '
        f'"httpStatus": {http_status}, "attempts": {result.attempts}, "error": {error}}}'
    )


class ReportSink:
    """Where results go, as a context manager: leaving the ``with`` block closes the file,
    whether or not the report was finished. This one writes nothing: no report was asked for.
    """

    def write(self, result: Result) -> None:
        pass

    def finish(self, summary: Summary) -> None:
        """Write the summary and put the report in place; the file is closed after it."""

    def close(self) -> None:
        """Close the file, finished or not; an unfinished JSON report leaves nothing behind."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JsonReport(ReportSink):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._partial = path.with_name(path.name + ".partial")
        self._file: IO[str] = self._partial.open("w", encoding="utf-8")
        self._first = True

    def write(self, result: Result) -> None:
        separator = "\n" if self._first else ",\n"
        self._first = False
        self._file.write(separator + json_line(result))

    def finish(self, summary: Summary) -> None:
        self._file.close()
        final = self._path.with_name(self._path.name + ".tmp")
        with final.open("w", encoding="utf-8") as out, self._partial.open(encoding="utf-8") as src:
            out.write('{"summary": ' + json.dumps(summary.to_record()) + ',\n"results": [')
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.write("\n]}\n")
        os.replace(final, self._path)
        self._partial.unlink()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._partial.unlink(missing_ok=True)  # finished: gone already; else never finished


class _FlushedEachTurn(ReportSink):
    """A report file flushed at the end of each event-loop turn in which it was written: so a
    killed run keeps every result finished before its last turn, for one write per turn, not
    one per line. (anyio has no end-of-turn callback: this is asyncio's ``call_soon``.)"""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._flush_due = False

    def _written(self) -> None:
        if self._flush_due:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush)
        except RuntimeError:  # no event loop: flushed at once
            self._file.flush()
            return
        self._flush_due = True

    def _flush(self) -> None:
        self._flush_due = False
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._file.close()  # what was written stays: every result finished so far


class JsonlReport(_FlushedEachTurn):
    def __init__(self, path: Path) -> None:
        super().__init__(path.open("w", encoding="utf-8"))

    def write(self, result: Result) -> None:
        self._file.write(json_line(result) + "\n")
        self._written()

    def finish(self, summary: Summary) -> None:
        self._file.write(json.dumps({"summary": summary.to_record()}) + "\n")
        self._file.close()


class CsvReport(_FlushedEachTurn):
    def __init__(self, path: Path) -> None:
        super().__init__(path.open("w", encoding="utf-8", newline=""))
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS)
        self._writer.writeheader()

    def write(self, result: Result) -> None:
        self._writer.writerow(result.to_record())
        self._written()

    def finish(self, summary: Summary) -> None:
        self._file.close()


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
    """Refuse a report name of an unknown kind before anything is sent."""
    if path is not None and path.suffix.lower() not in _BY_SUFFIX:
        raise UsageError(f"report {path}: use a .json, .jsonl or .csv file name")


def read_done(path: Path) -> frozenset[tuple[str, str]]:
    """(account, secretId) of every result of an earlier report that succeeded or was skipped.

    ``--only-failed`` runs everything else again: what failed, what was not attempted, and what
    a killed run never reached. A last line cut short by a kill is passed over.
    """
    try:
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        if suffix == ".json":
            records = json.loads(text)["results"]
        elif suffix == ".jsonl":
            records = [json.loads(line) for line in _whole_lines(text)]
        elif suffix == ".csv":
            records = list(csv.DictReader(io.StringIO(text, newline="")))
        else:
            raise UsageError(f"report {path}: not a .json, .jsonl or .csv report")
        return frozenset(
            (str(r["account"]), str(r["secretId"]))
            for r in records
            if isinstance(r, dict) and r.get("status") in (Status.SUCCEEDED, Status.SKIPPED)
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"report {path}: cannot read it as a bulk-secrets report ({exc})") from exc


def _whole_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]  # the last piece has no newline yet
