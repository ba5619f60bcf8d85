"""``bulk-secrets report``: reports of any format, finished or left by a killed run, merged
into one result per secret (the later report winning), counted, shown and written back."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from bulk_secrets.cli import main
from bulk_secrets.errors import ReportWriteFailed, UsageError
from bulk_secrets.merge import merge_reports, write_merged
from bulk_secrets.models import Action, Result, Status
from bulk_secrets.report import Done, Summary, json_line, open_report, read_done, read_results

A, B, C = "acct-a", "acct-b", "acct-c"
STATUSES = ("succeeded", "failed", "skipped", "not_attempted")
SUMMARY_KEYS = {"total", *STATUSES, "byAccount", "sources"}
HOSTILE_ERROR = 'HTTP 400: bad "keyName" \x1b[31mred\nline 2 é'
HOSTILE_KEY = "KEY\x1b]0;title\x07"


def result(
    account: str,
    secret_id: str,
    status: Status,
    error: str | None = None,
    *,
    key_name: str | None = None,
    action: Action = Action.CREATE,
) -> Result:
    return Result(
        account=account,
        key_name=key_name or secret_id.upper().replace("-", "_"),
        secret_id=secret_id,
        location=f"m.yaml:{len(secret_id)}",
        action=action,
        status=status,
        http_status=200 if status is Status.SUCCEEDED else None,
        attempts=0 if status is Status.NOT_ATTEMPTED else 2,
        error=error,
    )


def write_report(path: Path, results: list[Result], *, finish: bool = True) -> Path:
    """A report as a run writes it; ``finish=False``: as a killed run leaves it (a JSONL
    report without its summary line, a JSON run's ``.partial`` only)."""
    partial = path.with_name(path.name + ".partial")
    left = None
    with open_report(path) as sink:
        for each in results:
            sink.write(each)  # no event loop: flushed at once
        if finish:
            summary = Summary(started=0.0, finished=1.0)
            for each in results:
                summary.add(each)
            sink.finish(summary)
        elif path.suffix == ".json":
            left = partial.read_bytes()  # closed unfinished, the sink removes it
    if left is not None:
        partial.write_bytes(left)
    return path


def cli(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["report", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


# Three shards of three formats. Shard B reran A's failed k2, which succeeded; shard C's run
# was killed: no summary line, and its last line cut short.
SHARD_A = [
    result(A, "k1", Status.SUCCEEDED),
    result(A, "k2", Status.FAILED, "HTTP 500: server error"),
]
SHARD_B = [
    result(B, "k2", Status.NOT_ATTEMPTED, "the deadline passed"),
    result(B, "k1", Status.SKIPPED, "exists; --on-existing skip", action=Action.SKIP),
    result(A, "k2", Status.SUCCEEDED, action=Action.UPDATE),
]
SHARD_C = [
    result(C, "k1", Status.SUCCEEDED),
    result(C, "k2", Status.FAILED, HOSTILE_ERROR, key_name=HOSTILE_KEY),
]
CUT = result(C, "k3", Status.SUCCEEDED)  # the line the kill cut short
MERGED = sorted([SHARD_A[0], *SHARD_B, *SHARD_C], key=lambda each: (each.account, each.secret_id))


def shards(folder: Path) -> list[Path]:
    a = write_report(folder / "shard-a.json", SHARD_A)
    b = write_report(folder / "shard-b.csv", SHARD_B)
    c = write_report(folder / "shard-c.jsonl", SHARD_C, finish=False)
    with c.open("a", encoding="utf-8") as file:
        file.write(json_line(CUT)[:40])  # a kill cut the last line short
    return [a, b, c]


def test_three_shards_of_three_formats_merge_into_one_result_per_secret(tmp_path: Path) -> None:
    code, out, err = cli(*shards(tmp_path))
    assert code == 1  # a failure is left
    assert out.splitlines() == [
        "ACCOUNT  SUCCEEDED  FAILED  SKIPPED  NOT ATTEMPTED",
        "acct-a   2          0       0        0",
        "acct-b   0          0       1        1",
        "acct-c   1          1       0        0",
    ]
    assert err.splitlines() == [
        "bulk-secrets: 1 secret appears in more than one report; the later one counts",
        "bulk-secrets: failed: acct-c KEY\\x1b]0;title\\x07 (k2): "
        'HTTP 400: bad "keyName" \\x1b[31mred\\x0aline 2 é',
        "bulk-secrets: 6 secrets in 3 accounts from 3 reports: "
        "3 succeeded, 1 failed, 1 skipped, 1 not attempted",
    ]


def test_the_library_merges_the_same_way(tmp_path: Path) -> None:
    paths = shards(tmp_path)
    merged = merge_reports(paths)
    assert list(merged.results()) == MERGED
    assert (len(merged), merged.repeated, merged.sources) == (6, 1, paths)
    assert not merged.all_done
    assert merged.summary().first_failures == [SHARD_C[1]]


def test_a_secret_in_several_reports_takes_the_later_ones_result(tmp_path: Path) -> None:
    first = write_report(
        tmp_path / "first.jsonl",
        [
            result(A, "k1", Status.FAILED, "HTTP 503"),
            result(A, "k2", Status.FAILED, "HTTP 503"),
            result(A, "k3", Status.SUCCEEDED),
        ],
    )
    second = write_report(
        tmp_path / "second.csv",
        [result(A, "k1", Status.NOT_ATTEMPTED, "stopped"), result(A, "k2", Status.SUCCEEDED)],
    )
    third = write_report(tmp_path / "third.json", [result(A, "k1", Status.SUCCEEDED)])

    code, out, err = cli(first, second, third)
    # k1 is in three reports, k2 in two: each counted once.
    assert "2 secrets appear in more than one report; the later one counts" in err
    assert (code, out.splitlines()[1]) == (0, "acct-a   3          0       0        0")

    code, out, err = cli(third, second, first)  # the order given decides
    assert "2 secrets appear in more than one report; the later one counts" in err
    assert code == 1
    assert "failed: acct-a K1 (k1): HTTP 503" in err
    assert "failed: acct-a K2 (k2): HTTP 503" in err
    assert "3 secrets in 1 account from 3 reports: 1 succeeded, 2 failed" in err

    code, _, err = cli(first, first)  # the same report twice: every secret is in two
    assert "3 secrets appear in more than one report" in err


def test_a_secret_twice_in_one_report_is_not_in_more_than_one(tmp_path: Path) -> None:
    once = write_report(
        tmp_path / "r.jsonl",
        [result(A, "k1", Status.FAILED, "HTTP 503"), result(A, "k1", Status.SUCCEEDED)],
    )
    code, _, err = cli(once)
    assert code == 0
    assert "more than one report" not in err
    assert "1 secret in 1 account from 1 report: 1 succeeded" in err


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((Status.SUCCEEDED, Status.SKIPPED), 0),
        ((Status.SUCCEEDED, Status.NOT_ATTEMPTED), 1),
        ((Status.FAILED, Status.SKIPPED), 1),
        ((), 0),
    ],
)
def test_exit_1_when_a_secret_failed_or_was_not_attempted(
    tmp_path: Path, statuses: tuple[Status, ...], code: int
) -> None:
    results = [result(A, f"k{i}", status, "why") for i, status in enumerate(statuses)]
    report = write_report(tmp_path / "r.jsonl", results)
    assert cli(report)[0] == code


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("missing.jsonl", None, "cannot read it: No such file or directory"),
        ("r.txt", "", "not a .json, .jsonl or .csv report"),
        ("r.jsonl", "{cut\n" + json_line(SHARD_A[0]) + "\n", "line 1 is not JSON"),
        ("r.json", '{"summary": {}}', "no list of results"),
        ("r.csv", "a,b\r\n1,2\r\n", "no account, secretId, status columns"),
        ("r.jsonl", json_line(SHARD_A[0]).replace("succeeded", "done") + "\n", "status 'done'"),
        ("r.jsonl", json_line(SHARD_A[0]).replace('"create"', '"upsert"') + "\n", "'upsert'"),
        (
            "r.jsonl",
            json_line(SHARD_A[0]).replace('"attempts": 2', '"attempts": "x"') + "\n",
            "line 1: attempts is not a number",
        ),
        ("r.csv", "account,secretId,status\r\na,s,succeeded\r\n", "line 2: no keyName"),
    ],
)
def test_a_report_that_cannot_be_read_is_a_usage_error_naming_it(
    tmp_path: Path, name: str, text: str | None, problem: str
) -> None:
    good = write_report(tmp_path / "good.jsonl", SHARD_A)
    bad = tmp_path / name
    if text is not None:
        bad.write_text(text, encoding="utf-8")
    code, out, err = cli(good, bad)
    assert (code, out) == (2, "")
    assert err.startswith(f"bulk-secrets: error: report {bad}: ")
    assert problem in err
    assert str(good) not in err
    with pytest.raises(UsageError, match=f"^report {re.escape(str(bad))}: "):
        merge_reports([good, bad])


@pytest.mark.parametrize(
    ("name", "problem"),
    [("merged.txt", "use a .json, .jsonl or .csv file name"), ("no/merged.csv", "no folder")],
)
def test_a_write_that_could_not_be_made_is_refused_before_reading(
    tmp_path: Path, name: str, problem: str
) -> None:
    code, _, err = cli(tmp_path / "missing.jsonl", "--write", tmp_path / name)
    assert code == 2
    assert problem in err and "missing.jsonl" not in err


def test_output_json_is_the_merged_report(tmp_path: Path) -> None:
    paths = shards(tmp_path)
    code, out, _ = cli(*paths, "-o", "json")
    assert code == 1
    merged = json.loads(out)
    assert merged.keys() == {"summary", "results"}
    summary = merged["summary"]
    assert summary.keys() == SUMMARY_KEYS
    assert [summary[name] for name in ("total", *STATUSES)] == [6, 3, 1, 1, 1]
    assert summary["byAccount"] == {
        A: {"succeeded": 2, "failed": 0, "skipped": 0, "not_attempted": 0},
        B: {"succeeded": 0, "failed": 0, "skipped": 1, "not_attempted": 1},
        C: {"succeeded": 1, "failed": 1, "skipped": 0, "not_attempted": 0},
    }
    assert summary["sources"] == [str(path) for path in paths]
    assert merged["results"] == [each.to_record() for each in MERGED]  # by account, secretId

    printed = tmp_path / "printed.json"  # what it prints is itself a report
    printed.write_text(out, encoding="utf-8")
    assert list(read_results(printed)) == MERGED


def test_results_come_in_a_stable_order_whatever_the_reports_order(tmp_path: Path) -> None:
    results = [result(acct, key, Status.SUCCEEDED) for acct in (B, A) for key in ("k2", "k10")]
    one = write_report(tmp_path / "one.jsonl", results[:3])
    two = write_report(tmp_path / "two.csv", results[3:])
    first, second = (json.loads(cli(*order, "-o", "json")[1]) for order in [(one, two), (two, one)])
    assert first["results"] == second["results"]  # the same results, in the same order
    keys = [(r["account"], r["secretId"]) for r in first["results"]]
    assert keys == [(A, "k10"), (A, "k2"), (B, "k10"), (B, "k2")]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_write_puts_the_merged_report_in_the_format_of_its_suffix(
    tmp_path: Path, suffix: str
) -> None:
    paths = shards(tmp_path)
    written = tmp_path / f"merged{suffix}"
    written.write_text("the previous report\n")
    code, out, err = cli(*paths, "--write", written)
    assert code == 1 and "ACCOUNT" in out
    assert f"wrote {written}" in err
    done_keys = {(r.account, r.secret_id) for r in MERGED if r.status in ("succeeded", "skipped")}
    assert read_done(written) == Done(frozenset(done_keys), total=6, source=written)
    assert list(read_results(written)) == MERGED
    leftovers = {path.name for path in tmp_path.iterdir()} - {path.name for path in paths}
    assert leftovers == {written.name}  # no temporary, no .partial
    if suffix == ".json":
        summary = json.loads(written.read_text())["summary"]
        assert [summary[name] for name in ("total", *STATUSES)] == [6, 3, 1, 1, 1]
        assert summary["byAction"] == {"create": 3, "skip": 1, "update": 1}
    if suffix == ".jsonl":
        last = json.loads(written.read_text().splitlines()[-1])
        assert last["summary"]["failed"] == 1


def test_write_may_replace_one_of_the_reports_it_read(tmp_path: Path) -> None:
    first = write_report(tmp_path / "run.jsonl", [result(A, "k1", Status.FAILED, "HTTP 503")])
    rerun = write_report(tmp_path / "rerun.csv", [result(A, "k1", Status.SUCCEEDED)])
    assert cli(first, rerun, "--write", first)[0] == 0
    assert list(read_results(first)) == [result(A, "k1", Status.SUCCEEDED)]


def test_a_write_that_fails_leaves_the_previous_report_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged = merge_reports(shards(tmp_path))
    written = tmp_path / "merged.jsonl"
    written.write_text("the previous report\n")
    stale = tmp_path / "merged.jsonl.tmp.jsonl"
    target = tmp_path / "elsewhere"
    target.write_text("not to be written through\n")
    stale.symlink_to(target)

    def no_room(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("bulk_secrets.merge.os.fsync", no_room)
    with pytest.raises(ReportWriteFailed, match=f"^report {re.escape(str(written))}: .*No space"):
        write_merged(merged, written)
    assert written.read_text() == "the previous report\n"
    assert target.read_text() == "not to be written through\n"
    assert not stale.exists() and not stale.is_symlink()


def test_what_killed_runs_leave_is_read(tmp_path: Path) -> None:
    """A JSON run killed leaves its ``.partial``, a JSONL one no summary line, a CSV one its
    last row cut short: every whole result counts."""
    json_run = write_report(tmp_path / "a.json", SHARD_A, finish=False)
    assert not json_run.exists()
    jsonl_run = write_report(tmp_path / "c.jsonl", SHARD_C, finish=False)
    csv_run = write_report(tmp_path / "b.csv", SHARD_B, finish=False)
    data = csv_run.read_bytes()
    csv_run.write_bytes(data[: data.rindex(b"acct-a") + 8])  # A's k2 (the rerun) cut short

    code, out, _ = cli(json_run, csv_run, jsonl_run, "-o", "json")
    summary = json.loads(out)["summary"]
    partial = tmp_path / "a.json.partial"
    assert summary["sources"] == [str(partial), str(csv_run), str(jsonl_run)]
    assert [summary[name] for name in ("total", *STATUSES)] == [6, 2, 2, 1, 1]
    assert code == 1


@pytest.mark.parametrize("kind", ["jsonl", "csv", "partial"])
def test_read_results_reads_every_whole_result_at_every_cut(tmp_path: Path, kind: str) -> None:
    """Cut anywhere, what a killed run leaves gives every whole result, each field as it was
    written (a CSV row cut in its last column, ``error``, keeps what is left of it)."""
    results = [*SHARD_A, *SHARD_B, *SHARD_C]
    suffix = ".json" if kind == "partial" else f".{kind}"
    write_report(tmp_path / f"source{suffix}", results, finish=False)
    data = (tmp_path / f"source{suffix}{'.partial' if kind == 'partial' else ''}").read_bytes()
    report = tmp_path / f"r{suffix}{'.partial' if kind == 'partial' else ''}"
    for cut in range(len(data) + 1):
        report.write_bytes(data[:cut])
        read = list(read_results(tmp_path / f"r{suffix}"))
        assert read == results[: len(read)] or (
            kind == "csv" and read[:-1] == results[: len(read) - 1]
        ), cut
        for got, written in zip(read, results, strict=False):
            assert (got.account, got.secret_id, got.status) == (
                written.account,
                written.secret_id,
                written.status,
            ), cut
    assert list(read_results(tmp_path / f"r{suffix}")) == results


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_read_results_gives_back_every_field_written(tmp_path: Path, suffix: str) -> None:
    results = [*SHARD_A, *SHARD_B, *SHARD_C]
    report = write_report(tmp_path / f"r{suffix}", results)
    assert list(read_results(report)) == results
    assert read_results(report).source == report


def test_the_first_20_failures_are_named_then_how_many_more(tmp_path: Path) -> None:
    failures = [result(A, f"k{i:02d}", Status.FAILED, f"HTTP 500 #{i}") for i in range(25)]
    report = write_report(tmp_path / "r.csv", failures)
    code, _, err = cli(report)
    named = [line for line in err.splitlines() if line.startswith("bulk-secrets: failed: ")]
    assert named == [
        f"bulk-secrets: failed: acct-a K{i:02d} (k{i:02d}): HTTP 500 #{i}" for i in range(20)
    ]
    assert "bulk-secrets: ... and 5 more failed: see --output json or --write" in err
    assert code == 1


def test_quiet_says_nothing_when_all_is_done_and_json_logs_parse(tmp_path: Path) -> None:
    one = write_report(tmp_path / "one.jsonl", [result(A, "k1", Status.FAILED, HOSTILE_ERROR)])
    two = write_report(tmp_path / "two.json", [result(A, "k1", Status.SUCCEEDED)])
    code, out, err = cli(one, two, "--quiet")
    assert (code, err) == (0, "")
    assert out.startswith("ACCOUNT")

    code, _, err = cli(two, one, "--log-format", "json")
    events = [json.loads(line) for line in err.splitlines()]
    assert [event["event"] for event in events] == ["repeated", "failed", "summary"]
    assert events[1]["error"] == 'HTTP 400: bad "keyName" \\x1b[31mred\\x0aline 2 é'
    assert events[2].keys() >= SUMMARY_KEYS
    assert "\x1b" not in err and code == 1


def test_a_reruns_done_earlier_keeps_the_earlier_success(tmp_path: Path) -> None:
    """A run then its --only-failed rerun: what the first did stays succeeded, not skipped."""
    first = write_report(
        tmp_path / "first.jsonl",
        [result("acct", "a", Status.SUCCEEDED), result("acct", "b", Status.FAILED, "HTTP 503")],
    )
    rerun = write_report(
        tmp_path / "rerun.jsonl",
        [
            result("acct", "a", Status.SKIPPED, "done in the earlier run (--only-failed)"),
            result("acct", "b", Status.SUCCEEDED),
        ],
    )
    merged = merge_reports([first, rerun])
    assert {(r.secret_id, r.status) for r in merged.results()} == {
        ("a", Status.SUCCEEDED),
        ("b", Status.SUCCEEDED),
    }
    assert merged.all_done
