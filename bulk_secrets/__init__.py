"""bulk-secrets: provision Fireworks AI account secrets in bulk, with a per-secret report."""

from .errors import (
    AlreadyExists,
    ApiError,
    BulkSecretsError,
    ConnectionFailed,
    InvalidArgument,
    ManifestError,
    NotFound,
    PermissionDenied,
    Problem,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    RetryAbandoned,
    ServerError,
    TransientError,
    Unauthenticated,
    UsageError,
)
from .manifest import Manifest, load_manifest
from .models import Action, Credentials, Result, SecretSpec, SecretValue, Status
from .options import ApplyOptions, OnExisting, RetryOptions
from .report import Summary, open_report
from .runner import apply_secrets

__all__ = [
    "Action",
    "AlreadyExists",
    "ApiError",
    "ApplyOptions",
    "BulkSecretsError",
    "ConnectionFailed",
    "Credentials",
    "InvalidArgument",
    "Manifest",
    "ManifestError",
    "NotFound",
    "OnExisting",
    "PermissionDenied",
    "Problem",
    "RateLimited",
    "RequestRejected",
    "RequestTimeout",
    "Result",
    "RetryAbandoned",
    "RetryOptions",
    "SecretSpec",
    "SecretValue",
    "ServerError",
    "Status",
    "Summary",
    "TransientError",
    "Unauthenticated",
    "UsageError",
    "apply_secrets",
    "load_manifest",
    "open_report",
]
