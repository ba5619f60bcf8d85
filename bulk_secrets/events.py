"""What a run tells as it goes, for a progress display or a log: the phases, each result and,
when asked, each request. Plain data and a do-nothing base; nothing here sees a value."""

from __future__ import annotations

from dataclasses import dataclass

from .models import Result


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, once its answer (or its failure) came."""

    method: str
    account: str
    secret_id: str  # "" for a page of a listing
    status: int | None  # None: no answer (a dropped connection, a timeout)
    attempt: int
    seconds: float


class Observer:
    """Told what a run does; each method does nothing unless overridden. ``requests``: whether
    :meth:`request` is wanted (timing each request costs a little, so it is opt-in);
    ``results``: whether :meth:`result` is (a run of a million secrets makes a million calls)."""

    requests = False
    results = True

    def listing(self, accounts: int) -> None:
        """The run lists ``accounts`` accounts."""

    def applying(self, total: int) -> None:
        """The plan is settled: ``total`` results are to come."""

    def result(self, result: Result) -> None:
        """One secret ended."""

    def request(self, request: Request) -> None:
        """One request ended (only when ``requests`` is set)."""


QUIET = Observer()
