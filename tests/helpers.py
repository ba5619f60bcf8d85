"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

from bulk_secrets.models import Credentials, SecretSpec, SecretValue
from bulk_secrets.naming import secret_id_for
from bulk_secrets.options import ApplyOptions, RetryOptions

API_KEY = "test-key-0123456789"
ACCOUNT = "acct-1"
# Planted in values; must never appear in any output.
CANARY = "CANARY-7f3a9c1e-do-not-print"

FAST_RETRY = RetryOptions(retries=8, backoff_initial=0.001, backoff_max=0.01)


def credentials(key: str = API_KEY) -> Credentials:
    return Credentials(SecretValue(key))


def options(base_url: str, **overrides: object) -> ApplyOptions:
    fields: dict[str, object] = {"concurrency": 16, "timeout": 5.0, "retry": FAST_RETRY}
    fields.update(overrides)
    return ApplyOptions(base_url=base_url, **fields)  # type: ignore[arg-type]


def value_for(index: int) -> str:
    return f'{CANARY}-{index}-line1\nline2 "quoted" #hash =eq $dollar é'


def key_for(index: int) -> str:
    return f"SECRET_{index:05d}"


def specs(count: int, account: str = ACCOUNT) -> list[SecretSpec]:
    return [
        SecretSpec(
            account=account,
            key_name=key_for(i),
            secret_id=secret_id_for(key_for(i)),
            value=SecretValue(value_for(i)),
            location=f"test:{i + 1}",
        )
        for i in range(count)
    ]


def write_yaml_manifest(path: Path, count: int) -> Path:
    import json

    lines = ["secrets:"]
    for i in range(count):
        lines.append(f"  - keyName: {key_for(i)}")
        lines.append(f"    value: {json.dumps(value_for(i))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
