"""Reports: read back from whatever a run leaves, paths checked before the first request,
files written safely (new temporaries, never through a link), and a failed write that is a
project error, never a traceback."""

from __future__ import annotations

import asyncio
import csv
import errno
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bulk_secrets.errors import ReportWriteFailed, UsageError
from bulk_secrets.files import check_writable
from bulk_secrets.models import Action, Result, Status
from bulk_secrets.report import (
    REPORT_MODE,
    CsvReport,
    Done,
    JsonlReport,
    ReportSink,
    Summary,
    check_report_path,
    json_line,
    open_report,
    read_done,
)

from .disks import fill, mounted

A, B = "acct-a", "acct-b"
NO_SPACE = os.strerror(errno.ENOSPC)
IO_ERROR = os.strerror(errno.EIO)


def result(
    account: str,
    secret_id: str,
    status: Status,
    error: str | None = None,
    location: str = "m.yaml:3",
) -> Result:
    return Result(
        account=account,
        key_name=secret_id.upper().replace("-", "_"),
        secret_id=secret_id,
        location=location,
        action=Action.CREATE,
        status=status,
        http_status=200 if status is Status.SUCCEEDED else None,
        attempts=1,
        error=error,
    )


RESULTS = [
    result(A, "k1", Status.SUCCEEDED),
    result(A, "k2", Status.FAILED, 'HTTP 400: bad "keyName", see\nline 2 é'),
    result(B, "k1", Status.SKIPPED, "done in the earlier run", location="m.yaml:é9"),
    result(B, "k2", Status.NOT_ATTEMPTED, "the API key was rejected (401)"),
    result(B, "k3", Status.SUCCEEDED),
]
DONE_KEYS = frozenset({(A, "k1"), (B, "k1"), (B, "k3")})
DONE_STATUSES = (Status.SUCCEEDED, Status.SKIPPED)


def summary_of(results: list[Result]) -> Summary:
    summary = Summary(started=0.0, finished=0.5)
    for each in results:
        summary.add(each)
    return summary


def write_report(path: Path, results: list[Result], *, finish: bool = True) -> None:
    with open_report(path) as sink:
        for each in results:
            sink.write(each)
        if finish:
            sink.finish(summary_of(results))


def partial_of(folder: Path, results: list[Result]) -> bytes:
    """The ``.partial`` a JSON run killed after ``results`` leaves behind."""
    report = folder / "source.json"
    with open_report(report) as sink:
        for each in results:
            sink.write(each)  # no event loop: flushed at once
        partial = (folder / "source.json.partial").read_bytes()
    return partial


# 1. Read back whatever a run leaves


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_finished_report_of_any_format_reads_back_done_and_total(
    tmp_path: Path, suffix: str
) -> None:
    report = tmp_path / f"r{suffix}"
    write_report(report, RESULTS)
    done = read_done(report)
    assert done == Done(DONE_KEYS, total=5, source=report)
    assert (A, "k1") in done and (A, "k2") not in done  # the planner's membership test


def test_a_finished_report_keeps_its_format_byte_for_byte(tmp_path: Path) -> None:
    summary = summary_of(RESULTS)
    head = '{"summary": ' + json.dumps(summary.to_record()) + ',\n"results": ['
    lines = [json_line(each) for each in RESULTS]
    write_report(tmp_path / "r.json", RESULTS)
    assert (tmp_path / "r.json").read_text() == head + "\n" + ",\n".join(lines) + "\n]}\n"
    write_report(tmp_path / "r.jsonl", RESULTS)
    summary_line = json.dumps({"summary": summary.to_record()})
    assert (tmp_path / "r.jsonl").read_text() == "".join(f"{line}\n" for line in lines) + (
        summary_line + "\n"
    )
    write_report(tmp_path / "r.csv", RESULTS)
    expected = io.StringIO(newline="")
    writer = csv.DictWriter(expected, fieldnames=list(RESULTS[0].to_record()))
    writer.writeheader()
    writer.writerows(each.to_record() for each in RESULTS)
    assert (tmp_path / "r.csv").read_bytes() == expected.getvalue().encode()
    write_report(tmp_path / "empty.json", [])
    assert (tmp_path / "empty.json").read_text() == (
        '{"summary": ' + json.dumps(summary_of([]).to_record()) + ',\n"results": [\n]}\n'
    )


def _csv_row(each: Result) -> bytes:
    text = io.StringIO(newline="")
    csv.DictWriter(text, fieldnames=list(each.to_record())).writerow(each.to_record())
    return text.getvalue().encode()


def _whole_at(data: bytes, kind: str) -> list[int]:
    """For each result, the length of the shortest prefix of ``data`` that must count it:
    the end of its JSON text; for CSV, the start of its last column (``error``), as a row
    whose account, secretId and status are whole is a result whatever its error's cut."""
    ends = []
    for each in RESULTS:
        if kind == "csv":
            row = _csv_row(each)
            start = data.index(row)
            after_eighth_comma = [i for i, byte in enumerate(row) if byte == ord(",")][7] + 1
            ends.append(start + after_eighth_comma)
        else:
            line = json_line(each).encode()
            ends.append(data.index(line) + len(line))
    return ends


@pytest.mark.parametrize("kind", ["jsonl", "csv", "partial"])
def test_what_a_killed_run_leaves_reads_back_at_every_cut(tmp_path: Path, kind: str) -> None:
    """A kill may cut the file anywhere (a JSONL has no summary line yet, a CSV's last row or
    header is cut short, a JSON run leaves only its ``.partial``): every whole result counts,
    and the one cut short is passed over."""
    if kind == "partial":
        data = partial_of(tmp_path, RESULTS)
        report, read = tmp_path / "r.json.partial", tmp_path / "r.json"
    else:
        source = tmp_path / f"source.{kind}"
        write_report(source, RESULTS, finish=False)  # closed, as a killed run's file is
        data = source.read_bytes()
        report = read = tmp_path / f"r.{kind}"
    ends = _whole_at(data, kind)
    for cut in range(len(data) + 1):
        report.write_bytes(data[:cut])
        whole = [each for each, end in zip(RESULTS, ends, strict=True) if end <= cut]
        done = read_done(read)
        keys = frozenset((r.account, r.secret_id) for r in whole if r.status in DONE_STATUSES)
        assert (done.keys, done.total, done.source) == (keys, len(whole), report), cut


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
async def test_a_turn_of_many_results_reaches_the_file_as_it_goes(
    tmp_path: Path, suffix: str
) -> None:
    """Results are written together at the end of each event-loop turn, but a turn that
    settles thousands (a run stopped early) does not hold them all: they reach the file as
    they come, and the report is byte for byte what one written result by result is."""
    many = RESULTS * 400
    report = tmp_path / f"r{suffix}"
    on_disk = tmp_path / "r.json.partial" if suffix == ".json" else report
    with open_report(report) as sink:
        for each in many:
            sink.write(each)
        assert on_disk.stat().st_size > 100_000  # of some 400,000 bytes
        await anyio.lowlevel.checkpoint()
        sink.finish(summary_of(many))
    write_report(tmp_path / f"one-by-one{suffix}", many)  # no event loop: each at once
    assert report.read_bytes() == (tmp_path / f"one-by-one{suffix}").read_bytes()


def test_a_jsonl_report_killed_before_its_summary_counts_every_line(tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    write_report(report, RESULTS, finish=False)
    assert read_done(report) == Done(DONE_KEYS, total=5, source=report)


def test_a_json_run_that_did_not_finish_is_read_from_its_partial(tmp_path: Path) -> None:
    data = partial_of(tmp_path, RESULTS[:3])
    report, partial = tmp_path / "r.json", tmp_path / "r.json.partial"
    partial.write_bytes(data)
    assert read_done(report) == Done(frozenset({(A, "k1"), (B, "k1")}), 3, partial)
    assert read_done(partial) == read_done(report)  # named itself, it reads the same

    write_report(report, RESULTS)  # an earlier run that finished ...
    os.utime(report, (1_000, 1_000))
    partial.write_bytes(data)  # ... and a later one that was killed: resume the later
    assert read_done(report).source == partial
    os.utime(partial, (500, 500))  # a partial older than the report: the report
    assert read_done(report) == Done(DONE_KEYS, 5, report)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("r.txt", "", "not a .json, .jsonl or .csv report"),
        ("missing.jsonl", None, "cannot read it: No such file or directory"),
        ("r.jsonl", json_line(RESULTS[0]) + "\n{cut\n" + json_line(RESULTS[1]) + "\n", "line 2"),
        ("r.jsonl", '{"account": "a"}\n', "line 1: not a bulk-secrets result"),
        ("r.json", '{"summary": {}}', "no list of results"),
        ("r.json", '{"results": [1]}', "result 1: not a bulk-secrets result"),
        ("r.csv", "a,b\r\n1,2\r\n", "no account, secretId, status columns"),
        ("r.csv", "account,secretId,status\r\na\r\na,s,succeeded\r\n", "line 2: 1 columns"),
    ],
)
def test_what_is_not_a_report_is_a_usage_error(
    tmp_path: Path, name: str, text: str | None, problem: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=f"^report {path}: .*{problem}"):
        read_done(path)


# 2. Paths checked before the first request


def test_check_writable_accepts_a_new_file_an_existing_one_and_a_link(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "elsewhere")
    for name in ("new.json", "old.json", "link.json"):
        check_writable(tmp_path / name, "report")
    check_report_path(None)


def test_check_writable_refuses_a_missing_folder_a_folder_and_a_fifo(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^state file .*/nope/s\.json: there is no folder "):
        check_writable(tmp_path / "nope" / "s.json", "state file")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="there is no folder"):
        check_writable(tmp_path / "file" / "s.json", "state file")
    (tmp_path / "r.json").mkdir()
    with pytest.raises(UsageError, match=r"^report .*/r\.json: is a folder; name a file$"):
        check_writable(tmp_path / "r.json", "report")
    os.mkfifo(tmp_path / "r.jsonl")
    with pytest.raises(UsageError, match="not a regular file"):
        check_writable(tmp_path / "r.jsonl", "report")


def test_check_report_path_checks_the_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="there is no folder"):
        check_report_path(tmp_path / "nope" / "r.jsonl")
    with pytest.raises(UsageError, match="there is no folder"):
        open_report(tmp_path / "nope" / "r.json")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder no one may write in: a read-only tmpfs for root (whom permissions do not
    stop), else a folder of mode 0555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with mounted(folder, "ro,size=4k"):
        yield folder


def test_check_writable_refuses_a_folder_it_cannot_write_in(read_only_folder: Path) -> None:
    with pytest.raises(UsageError, match="cannot write in the folder"):
        check_report_path(read_only_folder / "r.csv")
    with pytest.raises(UsageError, match="cannot write in the folder"):
        check_writable(read_only_folder / "s.json", "state file")


# 3. Files written safely


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_link_at_the_report_path_is_replaced_never_written_through(
    tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    report = tmp_path / f"r{suffix}"
    report.symlink_to(target)
    write_report(report, RESULTS)
    assert target.read_text() == "keep me"
    assert not report.is_symlink()
    assert read_done(report).total == 5


@pytest.mark.parametrize("stale", [".partial", ".tmp"])
def test_a_stale_temporary_is_removed_not_followed(tmp_path: Path, stale: str) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / f"r.json{stale}").symlink_to(target)
    write_report(tmp_path / "r.json", RESULTS)
    assert target.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["precious", "r.json"]
    assert read_done(tmp_path / "r.json").total == 5


def test_a_stale_temporary_does_not_give_the_report_its_mode(tmp_path: Path) -> None:
    for stale in (".partial", ".tmp"):
        path = tmp_path / f"r.json{stale}"
        path.write_text("stale")
        path.chmod(0o666)
    umask = os.umask(0o022)
    try:
        write_report(tmp_path / "r.json", RESULTS)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == REPORT_MODE == 0o644


# 4. A failed write is a project error, once; the sink then writes nothing


class Failing:
    """A file whose writes and flushes fail as a broken disk's do."""

    def __init__(self, file: Any, code: int) -> None:
        self._file = file
        self._code = code

    def write(self, data: object) -> int:
        raise OSError(self._code, os.strerror(self._code))

    def flush(self) -> None:
        raise OSError(self._code, os.strerror(self._code))

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)


def _fails_once_then_writes_nothing(sink: ReportSink, path: Path, reason: str) -> None:
    with pytest.raises(ReportWriteFailed) as caught:
        for each in RESULTS * 100:
            sink.write(each)
    failure = caught.value
    assert str(failure) == f"report {path}: cannot write it: {reason}; it is not complete"
    assert (failure.path, failure.reason) == (path, reason)
    assert sink.failed is failure
    for each in RESULTS:
        sink.write(each)  # no-ops now
    with pytest.raises(ReportWriteFailed) as again:
        sink.finish(summary_of(RESULTS))
    assert again.value is failure


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_dev_full_fails_the_first_write_with_the_reason(kind: str) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    path = Path("/dev/full")
    sink = JsonlReport(path) if kind == "jsonl" else CsvReport(path)
    with sink:
        _fails_once_then_writes_nothing(sink, path, NO_SPACE)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_an_io_error_fails_the_report_with_the_reason(tmp_path: Path, suffix: str) -> None:
    report = tmp_path / f"r{suffix}"
    with open_report(report) as sink:
        sink._file = Failing(sink._file, errno.EIO)  # type: ignore[attr-defined]
        _fails_once_then_writes_nothing(sink, report, IO_ERROR)
    assert not (tmp_path / "r.json.partial").exists()


def test_an_io_error_at_the_end_leaves_the_previous_json_report_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "r.json"
    write_report(report, RESULTS[:1])
    before = report.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, IO_ERROR)

    monkeypatch.setattr(os, "fsync", fsync)
    with open_report(report) as sink:
        for each in RESULTS:
            sink.write(each)
        with pytest.raises(ReportWriteFailed, match=f"cannot write it: {IO_ERROR}"):
            sink.finish(summary_of(RESULTS))
        assert sink.failed is not None
    assert report.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.json"]  # no .partial, no .tmp


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
async def test_a_flush_that_fails_at_the_end_of_a_turn_is_kept_not_a_traceback(
    tmp_path: Path, suffix: str
) -> None:
    """The end-of-turn flush is a callback of the loop: what it meets goes to ``failed``,
    and the next write raises it; the loop's exception handler ("Exception in callback")
    never hears of it."""
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    report = tmp_path / f"r{suffix}"
    try:
        with open_report(report) as sink:
            sink.write(RESULTS[0])
            sink._file = Failing(sink._file, errno.ENOSPC)  # type: ignore[attr-defined]
            await anyio.lowlevel.checkpoint()  # the turn ends: the flush runs, and fails
            assert sink.failed is not None and sink.failed.reason == NO_SPACE
            with pytest.raises(ReportWriteFailed) as caught:
                sink.write(RESULTS[1])
            assert caught.value is sink.failed
            sink.write(RESULTS[2])  # a no-op
            await anyio.lowlevel.checkpoint()
            with pytest.raises(ReportWriteFailed):
                sink.finish(summary_of(RESULTS))
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_full_disk_fails_the_report_once_and_keeps_the_previous_json(
    small_disk: Path, suffix: str
) -> None:
    report = small_disk / f"r{suffix}"
    write_report(report, RESULTS[:2])
    before = report.read_bytes()
    fill(small_disk)
    with open_report(report) as sink:
        _fails_once_then_writes_nothing(sink, report, NO_SPACE)
    if suffix == ".json":
        assert report.read_bytes() == before  # put in place only at the very end
    assert sorted(os.listdir(small_disk)) == ["filler", report.name]


def test_a_disk_that_fills_before_the_end_keeps_the_previous_json(small_disk: Path) -> None:
    report = small_disk / "r.json"
    write_report(report, RESULTS[:2])
    before = report.read_bytes()
    with open_report(report) as sink:
        for each in RESULTS:
            sink.write(each)  # on disk, in the .partial
        fill(small_disk)
        with pytest.raises(ReportWriteFailed, match=f"cannot write it: {NO_SPACE}"):
            sink.finish(summary_of(RESULTS))
    assert report.read_bytes() == before
    assert sorted(os.listdir(small_disk)) == ["filler", "r.json"]  # no .partial, no .tmp


@pytest.mark.anyio
async def test_a_disk_that_fills_mid_run_is_kept_by_the_flush_not_a_traceback(
    small_disk: Path,
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    report = small_disk / "r.jsonl"
    try:
        with open_report(report) as sink:
            sink.write(RESULTS[0])
            await anyio.lowlevel.checkpoint()
            fill(small_disk)
            for each in RESULTS * 6:  # more than the page begun holds, less than a buffer
                sink.write(each)
            await anyio.lowlevel.checkpoint()  # the flush at the end of the turn fails
            assert sink.failed is not None and sink.failed.reason == NO_SPACE
            with pytest.raises(ReportWriteFailed):
                sink.write(RESULTS[2])
            with pytest.raises(ReportWriteFailed):
                sink.finish(summary_of(RESULTS))
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
    assert 1 <= read_done(report).total < 31  # what reached the disk reads back


def test_a_summary_of_many_accounts_has_a_repr_of_one_line() -> None:
    # asyncio formats a run's result whenever it describes the task: that must not cost a
    # string as long as the run is wide.
    summary = Summary(started=0.0, finished=1.0)
    for number in range(10_000):
        summary.add(
            Result(
                account=f"acct-{number:05d}",
                key_name="KEY",
                secret_id="key",
                location="m.csv:2",
                action=Action.CREATE,
                status=Status.SUCCEEDED,
            )
        )
    shown = repr(summary)
    assert shown == f"<Summary {summary.line()}>"
    assert "10000 secrets: 10000 succeeded" in shown
    assert "acct-" not in shown and len(shown) < 200


def test_a_summary_counts_each_result_by_status_by_action_and_by_account() -> None:
    summary = Summary(started=0.0, finished=1.0)
    kinds = [
        ("acct-b", Action.CREATE, Status.SUCCEEDED),
        ("acct-a", Action.UPDATE, Status.SUCCEEDED),
        ("acct-b", Action.CREATE, Status.FAILED),
        ("acct-b", Action.SKIP, Status.SKIPPED),
        ("acct-a", Action.CREATE, Status.NOT_ATTEMPTED),
        ("acct-b", Action.CREATE, Status.SUCCEEDED),
    ]
    for account, action, status in kinds:
        summary.add(Result(account, "KEY", "key", "m.csv:2", action, status))
    assert summary.by_status == {"succeeded": 3, "failed": 1, "skipped": 1, "not_attempted": 1}
    assert summary.by_action == {"create": 3, "update": 1, "skip": 1}  # not attempted: no action
    assert list(summary.by_account) == ["acct-b", "acct-a"]  # in order of their first result
    assert summary.by_account["acct-b"] == {"succeeded": 2, "failed": 1, "skipped": 1}
    assert summary.by_account["acct-a"] == {"succeeded": 1, "not_attempted": 1}
    assert (summary.total, summary.count(Status.FAILED), summary.count(Status.SKIPPED)) == (6, 1, 1)
    assert summary.by_account["acct-a"]["failed"] == 0  # a Counter: a status not met counts 0
    assert [f.account for f in summary.first_failures] == ["acct-b"]
    assert not summary.all_succeeded


def test_a_result_added_after_the_counts_were_read_is_counted() -> None:
    """The counts by status, action and account are worked out when read and kept: a result
    that comes after them is counted all the same, in every one of them."""
    summary = Summary(started=0.0, finished=1.0)
    summary.add(Result("acct-a", "A", "a", "m.csv:2", Action.CREATE, Status.SUCCEEDED))
    assert (summary.total, summary.all_succeeded) == (1, True)
    summary.add(Result("acct-b", "B", "b", "m.csv:3", Action.UPDATE, Status.FAILED))
    assert summary.by_status == {"succeeded": 1, "failed": 1}
    assert summary.by_action == {"create": 1, "update": 1}
    assert list(summary.by_account) == ["acct-a", "acct-b"]
    assert (summary.total, summary.count(Status.FAILED), summary.all_succeeded) == (2, 1, False)
