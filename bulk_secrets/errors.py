"""The exception tree of bulk-secrets.

Every error the library raises derives from :class:`BulkSecretsError`::

    BulkSecretsError
    ├── UsageError              bad options or arguments; nothing was sent
    ├── ManifestError           the manifest is broken; carries every problem with file:line
    ├── ManifestChanged         the manifest file changed between its check and its use
    ├── ReportWriteFailed       the report could not be written (disk full, I/O error)
    ├── StateSaveFailed         the state file could not be saved; it is left as it was
    └── ApiError                a call to the secrets API failed
        ├── TransientError      worth retrying with backoff
        │   ├── ConnectionFailed    could not connect, or the connection broke
        │   ├── RequestTimeout      no answer within the per-request timeout
        │   ├── RateLimited         429; may carry the server's Retry-After
        │   └── ServerError         408 or 5xx
        ├── RetryAbandoned      a retry was due, but the run had been stopped meanwhile
        ├── TlsFailed           the TLS handshake failed (an untrusted certificate); not retried
        └── RequestRejected     the server understood and said no; retrying will not help
            ├── InvalidArgument     400
            ├── Unauthenticated     401: the API key is wrong; its accounts stop
            ├── PermissionDenied    403: the key may not touch this account; the account stops
            ├── NotFound            404
            ├── AlreadyExists       409
            ├── Redirected          3xx: redirects are never followed
            ├── BadAnswer           an answer too large, or not of the documented shape
            └── WaitTooLong         429 with a Retry-After longer than the run may wait

No message in this tree ever contains a secret value: the client scrubs server messages
before it builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class BulkSecretsError(Exception):
    """Root of every error raised by bulk-secrets."""


class UsageError(BulkSecretsError):
    """The command line or the options are wrong; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest, at a place a user can open in an editor."""

    path: str
    line: int | None
    message: str
    column: str | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        kind = "warning" if self.warning else "error"
        column = f"column {self.column}: " if self.column else ""
        return f"{where}: {kind}: {column}{self.message}"


class ManifestError(BulkSecretsError):
    """The manifest cannot be applied; every problem found is listed, each with file:line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"manifest rejected, {count} {noun}; nothing was sent:\n{lines}")


class ManifestChanged(BulkSecretsError):
    """A manifest read again as a stream was not the file that was checked: run again."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} changed after it was checked; run again on a settled file")


class ApiError(BulkSecretsError):
    """A call to the secrets API failed.

    ``status`` is the HTTP status (None when no answer came back) and ``message`` the server's
    own words, already scrubbed of the value that was sent.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        self.message = message
        super().__init__(message if status is None else f"HTTP {status}: {message}")


class TransientError(ApiError):
    """A failure that may pass: retried with jittered exponential backoff."""


class ConnectionFailed(TransientError):
    """The connection could not be opened, or it broke before an answer came back."""


class RequestTimeout(TransientError):
    """No answer came back within the per-request timeout."""


class RateLimited(TransientError):
    """The server answered 429; ``retry_after`` is its Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, *, status: int = 429, retry_after: float | None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ServerError(TransientError):
    """The server answered 408 or 5xx."""


class TlsFailed(ApiError):
    """The TLS handshake failed: most often a certificate that is not trusted. Not retried:
    it will not pass by itself (give the right CA bundle)."""


class RetryAbandoned(ApiError):
    """A retry was due, but the run had been stopped (bad API key, or the account refused)."""


class RequestRejected(ApiError):
    """The server understood the request and refused it; retrying will not help."""


class InvalidArgument(RequestRejected):
    """400: the server rejected the id, the keyName or the body."""


class Unauthenticated(RequestRejected):
    """401: the API key is missing or wrong; the accounts that use it stop."""


class PermissionDenied(RequestRejected):
    """403: the API key may not touch this account. Use a key of that account."""


class NotFound(RequestRejected):
    """404: no such secret."""


class AlreadyExists(RequestRejected):
    """409: a secret with this id already exists."""


class Redirected(RequestRejected):
    """3xx: the server sent the request elsewhere. Redirects are never followed, so that a
    secret never goes to a host that was not asked for."""


class BadAnswer(RequestRejected):
    """An answer larger than the client reads, or not of the documented shape."""


class WaitTooLong(RequestRejected):
    """429 with a Retry-After longer than the run may wait; the account stops."""


class ReportWriteFailed(BulkSecretsError):
    """The report could not be written (disk full, I/O error): the run's results stand, its
    report is not complete. ``reason`` is the system's (strerror), never a value."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path = path
        self.reason = exc.strerror or type(exc).__name__
        super().__init__(f"report {path}: cannot write it: {self.reason}; it is not complete")


class StateSaveFailed(BulkSecretsError):
    """The state file could not be saved (disk full, I/O error, a lock file that is a link):
    it is left as it was, so the next run writes again what this one wrote."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"state file {path}: cannot save it: {reason}; it is left as it was")
