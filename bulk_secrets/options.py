"""Settings of a run: frozen, keyword-only, checked when built, with their defaults here."""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_BASE_URL = "https://api.fireworks.ai"
DEFAULT_CONCURRENCY = 32
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 30.0
DEFAULT_BACKOFF_INITIAL = 0.2
DEFAULT_BACKOFF_MAX = 20.0
# Fireworks documents 6,000 requests per minute per account (with a payment method).
DEFAULT_MAX_RPS = 100.0


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

    def __post_init__(self) -> None:
        _check_positive("concurrency", self.concurrency)
        if self.max_rps < 0:
            raise ValueError(f"max_rps must be >= 0 (0: no cap), got {self.max_rps!r}")
        _check_positive("timeout", self.timeout)
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
