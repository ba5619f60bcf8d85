"""Settings of a run: frozen, keyword-only, checked when built, with their defaults here."""

from __future__ import annotations

import enum
import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.fireworks.ai"
DEFAULT_CONCURRENCY = 32
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 30.0
DEFAULT_BACKOFF_INITIAL = 0.2
DEFAULT_BACKOFF_MAX = 20.0
# Fireworks documents 6,000 requests per minute per account (with a payment method), shared
# with the account's own inference traffic: provisioning takes half of it by default.
DEFAULT_MAX_RPS = 50.0
DEFAULT_MAX_WAIT = 60.0  # seconds of Retry-After the run will wait; a longer one stops the account


class OnExisting(enum.StrEnum):
    """What to do with a secret that already exists in the account."""

    UPDATE = "update"
    SKIP = "skip"
    FAIL = "fail"


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryOptions:
    """How failures that may pass are retried: ``retries`` more attempts after the first."""

    retries: int = DEFAULT_RETRIES
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries!r}")
        _check_positive("backoff_initial", self.backoff_initial)
        _check_positive("backoff_max", self.backoff_max)

    @property
    def attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ApplyOptions:
    """Everything that shapes an apply run, except the manifest and the API keys."""

    base_url: str = DEFAULT_BASE_URL
    concurrency: int = DEFAULT_CONCURRENCY
    max_rps: float = DEFAULT_MAX_RPS  # requests per second per account; 0 = no cap
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryOptions = RetryOptions()
    on_existing: OnExisting = OnExisting.UPDATE
    prune: bool = False  # delete the targeted accounts' secrets that no manifest names
    keep: tuple[str, ...] = ()  # globs of ids or keyNames that prune spares
    max_wait: float = DEFAULT_MAX_WAIT  # the longest Retry-After waited
    deadline: float | None = None  # seconds the whole run may take; None: no bound
    ca_bundle: str | None = None  # CA certificates to trust; None: the system's

    def __post_init__(self) -> None:
        _check_positive("concurrency", self.concurrency)
        if not (math.isfinite(self.max_rps) and self.max_rps >= 0):
            raise ValueError(f"max_rps must be >= 0 (0: no cap), got {self.max_rps!r}")
        _check_positive("timeout", self.timeout)
        _check_positive("max_wait", self.max_wait)
        if self.deadline is not None:
            _check_positive("deadline", self.deadline)
        problem = base_url_problem(self.base_url)
        if problem:
            raise ValueError(problem)


def base_url_problem(url: str) -> str | None:
    """Why the API key and values must not be sent to ``url``, or None: https, or plain http
    to this machine's own loopback address only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return None
    shown = f"{parts.scheme}://{parts.hostname or ''}"  # never a password in the URL
    if parts.scheme == "http":
        return (
            f"base URL {shown} would send the API key and values in clear text: use https:// "
            "(plain http:// is allowed to 127.0.0.1, ::1 and localhost only)"
        )
    return f"base URL {shown}...: use https://HOST"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: this machine's own loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
