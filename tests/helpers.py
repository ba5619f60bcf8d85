"""Small builders shared by the tests."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import anyio
from anyio.abc import Process

from bulk_secrets.cli import main
from bulk_secrets.models import Credentials, SecretSpec, SecretValue
from bulk_secrets.naming import secret_id_for
from bulk_secrets.options import ApplyOptions, RetryOptions

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
ACCOUNT = "acct-1"
# Planted in values; must never appear in any output.
CANARY = "CANARY-7f3a9c1e-do-not-print"

FAST_RETRY = RetryOptions(retries=8, backoff_initial=0.001, backoff_max=0.01)


def credentials(key: str = API_KEY) -> Credentials:
    return Credentials(SecretValue(key))


def options(base_url: str, **overrides: object) -> ApplyOptions:
    fields: dict[str, object] = {
        "concurrency": 16,
        "timeout": 5.0,
        "retry": FAST_RETRY,
        "max_rps": 0,  # no cap unless a test asks for one
    }
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


def csv_text(
    header: list[str], rows: Iterable[Sequence[str]], *, lineterminator: str = "\n"
) -> str:
    """A CSV manifest's text, quoted as ``csv`` writes it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=lineterminator)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_yaml_manifest(path: Path, count: int) -> Path:
    lines = ["secrets:"]
    for i in range(count):
        lines.append(f"  - keyName: {key_for(i)}")
        lines.append(f"    value: {json.dumps(value_for(i))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli_env(api_key: str | None = API_KEY) -> dict[str, str]:
    """The environment of a CLI process under test: no FIREWORKS_ settings but the key, no
    proxy (every test server is on loopback), and no CA bundle to load, since no test process
    speaks TLS: aiohttp loads the system's at import, a tenth of a second of each process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FIREWORKS_") and not k.lower().endswith("_proxy")
    }
    env["SSL_CERT_FILE"] = os.devnull
    env.pop("REQUESTS_CA_BUNDLE", None)
    if api_key is not None:
        env["FIREWORKS_API_KEY"] = api_key
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "bulk_secrets", *args],
        check=False,
        env=cli_env() if env is None else env,
        cwd=ROOT,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def run_main(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The real CLI's ``main``, in this process (a worker thread, as a script's own call would
    run it), with ``env`` as the whole environment, from the project's root: the exit code,
    stdout and stderr. For what needs no process of its own (signals, exit, stdin do);
    it spares each call the start of a Python process."""
    return await anyio.to_thread.run_sync(_main_here, list(args), cli_env() if env is None else env)


def _main_here(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with (
            mock.patch.dict(os.environ, env, clear=True),
            redirect_stdout(out),
            redirect_stderr(err),
        ):
            code = main(argv)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


async def read_until(process: Process, marker: str) -> str:
    assert process.stderr is not None
    seen = ""
    async for chunk in process.stderr:
        seen += chunk.decode()
        if marker in seen:
            return seen
    raise AssertionError(f"{marker!r} never appeared in stderr: {seen}")
