"""Reports merged into one: the shards of a run, or a run and its reruns, as one result per
secret (``bulk-secrets report``).

Any report is read, finished or left by a killed run (:func:`report.read_results`, the readers
behind ``--only-failed``). A secret is an (account, secretId); one that appears in more than
one report takes its result from the later report, in the order given. Memory grows with the
distinct secrets only, one small tuple each, whatever the reports' sizes (a finished JSON report
is parsed whole while it is read, as ``--only-failed`` parses it); results come out in a stable
order, by account, then secretId.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReportWriteFailed
from .models import Action, Result, Status
from .policy import Why
from .report import Summary, check_report_path, open_report, read_results

# What is kept of a secret's result besides its key: keyName, location, action, status,
# httpStatus, attempts, error, the index of the report it came from, and whether an earlier
# report named it too.
_Kept = tuple[str, str, Action, Status, int | None, int, str | None, int, bool]


@dataclass
class Merged:
    """The merged results of ``sources`` (the files read, in order: a JSON report's
    ``.partial`` where its run did not finish). ``repeated`` counts the secrets that appear in
    more than one report (each once, however many)."""

    sources: list[Path] = field(default_factory=list)
    repeated: int = 0
    _kept: dict[tuple[str, str], _Kept] = field(default_factory=dict, repr=False)
    _order: list[tuple[str, str]] | None = field(default=None, repr=False)
    _summary: Summary | None = field(default=None, repr=False)

    def add(self, results: Iterable[Result], source: Path) -> None:
        """Merge the results of one more report, read from ``source``: they win over what the
        reports added before named."""
        index = len(self.sources)
        self.sources.append(source)
        kept = self._kept
        accounts: dict[str, str] = {}  # one string per account, not one per result
        for result in results:
            account = accounts.setdefault(result.account, result.account)
            key = (account, result.secret_id)
            before = kept.get(key)
            repeated = False  # an earlier report named it too
            if before is not None:
                repeated = before[8] or before[7] != index
                if repeated and not before[8]:
                    self.repeated += 1  # counted once, when a second report names it
                if _done_earlier(result) and before[7] != index:
                    kept[key] = (*before[:8], repeated)  # a rerun's "done earlier": keep it
                    continue
            kept[key] = (
                result.key_name,
                result.location,
                result.action,
                result.status,
                result.http_status,
                result.attempts,
                result.error,
                index,
                repeated,
            )
        self._order = None
        self._summary = None

    def __len__(self) -> int:
        return len(self._kept)

    def results(self) -> Iterator[Result]:
        """One result per secret, by account, then secretId."""
        if self._order is None:
            self._order = sorted(self._kept)
        kept = self._kept
        for account, secret_id in self._order:
            key_name, location, action, status, http_status, attempts, error, _, _ = kept[
                (account, secret_id)
            ]
            yield Result(
                account=account,
                key_name=key_name,
                secret_id=secret_id,
                location=location,
                action=action,
                status=status,
                http_status=http_status,
                attempts=attempts,
                error=error,
            )

    def summary(self) -> Summary:
        """A :class:`Summary` of the merged results, each added in order (its failures kept
        are the first by account, then secretId); it counts no request and no time."""
        if self._summary is None:
            summary = Summary(started=0.0, finished=0.0)
            for result in self.results():
                summary.add(result)
            self._summary = summary
        return self._summary

    @property
    def all_done(self) -> bool:
        """True when no secret failed and none was left not attempted."""
        return self.summary().all_succeeded

    def summary_record(self) -> dict[str, Any]:
        """The summary of ``--output json``: ``total``, a count per status, ``byAccount``
        (each account's counts by status) and ``sources`` (the files read, in order)."""
        summary = self.summary()
        return {
            "total": summary.total,
            **{status.value: summary.count(status) for status in Status},
            "byAccount": {
                account: {status.value: counts[status.value] for status in Status}
                for account, counts in sorted(summary.by_account.items())
            },
            "sources": [str(source) for source in self.sources],
        }


def merge_reports(paths: Iterable[Path]) -> Merged:
    """The reports at ``paths`` merged, the later winning. A report that cannot be read (not
    a report, a result not whole, a missing file) raises :class:`UsageError` naming it."""
    merged = Merged()
    for path in paths:
        results = read_results(path)
        merged.add(results, results.source)
    return merged


def write_merged(merged: Merged, path: Path) -> None:
    """Write the merged report at ``path``, in the format of its suffix (.json, .jsonl or
    .csv), with the report writers; ``path`` changes once, when the report is whole (a failed
    write leaves what was there as it was, and raises :class:`ReportWriteFailed`)."""
    check_report_path(path)
    if path.suffix.lower() == ".json":  # the JSON writer puts its report in place itself
        _write(merged, path)
        return
    temporary = path.with_name(f"{path.name}.tmp{path.suffix}")
    try:
        with suppress(FileNotFoundError):  # a stale one, file or link: never written through
            temporary.unlink()
        _write(merged, temporary)
        descriptor = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except ReportWriteFailed as exc:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise ReportWriteFailed(path, OSError(0, exc.reason)) from exc
    except OSError as exc:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise ReportWriteFailed(path, exc) from exc


def _write(merged: Merged, path: Path) -> None:
    with open_report(path) as sink:
        for result in merged.results():
            sink.write(result)
        sink.finish(merged.summary())


def _done_earlier(result: Result) -> bool:
    """A rerun's (``--only-failed``) skip of what the earlier run did: not a newer outcome."""
    return result.status is Status.SKIPPED and (result.error or "").startswith(Why.DONE_EARLIER)
