"""What the harness records: one client's run, a scenario, a target check, the settings."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The zero of since_start, and so of every began_at and ended_at. run.py sets it again once
# every module is imported, so that, as in a one-file harness, imports are not counted.
STARTED = time.perf_counter()

EXTRA_CONNECTIONS = 4  # apply may open at most concurrency + this many TCP connections


def since_start() -> float:
    return time.perf_counter() - STARTED


class RunFailed(Exception):
    """A client run gave no measurement: it crashed, timed out or printed no summary."""


@dataclass
class Measurement:
    """One client's run against one fresh emulator."""

    scenario: str
    client: str  # "sequential", "bare" or "apply"
    concurrency: int
    latency_ms: float
    secrets: int  # asked for (for sequential: the sample size)
    accounts: int = 1  # the secrets are spread over this many accounts, account by account
    succeeded: int = 0
    # Timed inside the client: the sequential loop; bare.py's loop (session open to close);
    # apply's summary durationSeconds (the run as the CLI times it; no interpreter start-up).
    work_seconds: float = 0.0
    wall_seconds: float = 0.0  # the whole client process, interpreter start-up included
    server: str = ""  # the emulator's fault knobs
    tls: bool = False  # https, the client trusting the emulator's self-signed certificate
    loop: str | None = None  # the client's event loop: bare's --loop, apply's BULK_SECRETS_LOOP
    malloc_tuned: bool = False  # run with processes.MALLOC_ENV (no mmap per socket read)
    max_rps: float | None = None  # apply's --max-rps; None: bare, or apply's default rate
    dry_run: bool = False  # apply --dry-run: list and plan, write nothing
    sampled: bool = False
    requests_by_status: dict[str, int] = field(default_factory=dict)  # from /_emulator/stats
    connections: int | None = None  # TCP connections the client opened (from the stats)
    peak_rss_kib: int | None = None
    client_cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None
    exit_code: int | None = None
    summary: dict[str, Any] | None = None  # apply's JSON summary
    ratio_vs_bare: float | None = None
    ratio_vs_sequential: float | None = None
    repeat_rates: list[float] = field(default_factory=list)  # every repeat; this is the median
    repeat_runs: list[dict[str, Any]] = field(default_factory=list)  # every repeat, in short
    note: str = ""
    error: str | None = None  # why there is no measurement
    # Run at once with others and watched (see timeline.py): (time, secrets created so far), and
    # its rate over the stretch when every run of them was creating.
    created: list[tuple[float, int]] = field(default_factory=list, repr=False)
    overlap_rate: float | None = None
    # Seconds since the harness started: when this run's emulator was started, and when the
    # run was over (emulator stopped). What lies between runs is the harness's own time.
    began_at: float = field(default_factory=since_start)
    ended_at: float | None = None

    @property
    def rate(self) -> float:
        """Secrets created per second of ``work_seconds``."""
        return self.succeeded / self.work_seconds if self.work_seconds > 0 else 0.0

    @property
    def request_rate(self) -> float:
        """API requests (the emulator's count, listing included) per second of work."""
        return self.requests / self.work_seconds if self.work_seconds > 0 else 0.0

    @property
    def wall_rate(self) -> float:
        return self.succeeded / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def requests(self) -> int:
        return sum(self.requests_by_status.values())

    @property
    def share_429(self) -> float:
        limited = sum(n for k, n in self.requests_by_status.items() if k.endswith(" 429"))
        return limited / self.requests if self.requests else 0.0

    @property
    def peak_rss_mib(self) -> float | None:
        return None if self.peak_rss_kib is None else self.peak_rss_kib / 1024

    @property
    def all_succeeded(self) -> bool:
        return self.error is None and self.succeeded == self.secrets

    @property
    def connection_limit(self) -> int:
        return self.concurrency + EXTRA_CONNECTIONS

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        del record["created"]  # a read every 50 ms: the rate over it is kept
        record.update(
            rate=self.rate,
            request_rate=self.request_rate,
            wall_rate=self.wall_rate,
            requests=self.requests,
            share_429=self.share_429,
            peak_rss_mib=self.peak_rss_mib,
            all_succeeded=self.all_succeeded,
            connection_limit=self.connection_limit,
        )
        return record


@dataclass
class Scenario:
    name: str
    description: str
    measurements: list[Measurement] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def find(self, client: str, concurrency: int | None = None, **match: Any) -> Measurement | None:
        """The first run of ``client`` (at ``concurrency``) whose attributes equal ``match``."""
        for m in self.measurements:
            if m.client != client or concurrency not in (None, m.concurrency):
                continue
            if all(getattr(m, name) == value for name, value in match.items()):
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "measurements": [m.to_dict() for m in self.measurements],
            **self.extra,
        }


@dataclass(frozen=True)
class Check:
    group: str  # the goal it belongs to: "rate control", "CPU per secret", ...
    name: str
    observed: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else "PASS" if self.passed else "MISS"


@dataclass(frozen=True)
class Settings:
    secrets: int
    quick: bool
    smoke: bool  # the scenarios at once, on shared emulators: a check, not a measurement
    sequential_sample: dict[float, int]
    repeats: int
    cpu_bound_repeats: int  # of the CPU-bound comparison of many accounts
    cpu_repeats: int  # of CPU per secret
    sweep: tuple[int, ...]
    rate_limited_secrets: int  # the token-bucket scenario
    rate_control_secrets: int  # the random-429 scenario
    cpu_secrets: tuple[int, int]  # the CPU-per-secret runs: (small, large)
    loops: tuple[str, ...]  # the event loops of the CPU-per-secret scenario
    many_accounts: tuple[int, int]  # (accounts, secrets each) of the throughput runs
    many_accounts_rss: tuple[int, int] | None  # (accounts, secrets each) of the RSS run
    memory_rows: tuple[int, ...]  # empty: memory is not measured
    only: tuple[str, ...]  # the scenarios to run; empty: all
    json_out: Path


def ratio(numerator: Measurement | None, denominator: Measurement | None) -> float | None:
    if numerator is None or denominator is None or denominator.rate <= 0:
        return None
    return numerator.rate / denominator.rate
