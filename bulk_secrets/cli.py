"""The ``bulk-secrets`` command: arguments -> options -> one library call -> exit code."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from . import emulator
from .errors import BulkSecretsError, ManifestError, UsageError
from .manifest import FORMATS, Manifest, load_manifest
from .models import Credentials, SecretValue
from .options import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    ApplyOptions,
    OnExisting,
    RetryOptions,
)
from .report import ReportSink, Summary, open_report
from .runner import apply_secrets

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

SANDBOX_ACCOUNT = "sandbox"
SANDBOX_KEY = "sandbox-key"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulk-secrets",
        description="Provision Fireworks AI account secrets in bulk from a manifest.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = commands.add_parser("apply", help="write every secret of a manifest")
    apply.add_argument("manifest", help="YAML (.yaml, .yml) or CSV (.csv) manifest")
    apply.add_argument("--format", choices=FORMATS, help="manifest format (default: by suffix)")
    apply.add_argument(
        "--account",
        help="target account id (default: the manifest's, else $FIREWORKS_ACCOUNT_ID)",
    )
    apply.add_argument(
        "--base-url",
        default=os.environ.get("FIREWORKS_BASE_URL", DEFAULT_BASE_URL),
        help="API base URL (default: $FIREWORKS_BASE_URL, else %(default)s)",
    )
    apply.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight at most (default: %(default)s)",
    )
    apply.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="retries of a transient failure (default: %(default)s)",
    )
    apply.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds per request (default: %(default)s)",
    )
    apply.add_argument(
        "--on-existing",
        choices=[o.value for o in OnExisting],
        default=OnExisting.UPDATE.value,
        help="what to do with a secret that exists already (default: %(default)s)",
    )
    apply.add_argument(
        "--report", type=Path, help="write a per-secret report here (.json, .jsonl or .csv)"
    )
    apply.add_argument(
        "--sandbox",
        action="store_true",
        help="apply against a built-in emulator on 127.0.0.1 with a throwaway key: "
        "needs no account, sends nothing off this machine",
    )

    serve = commands.add_parser("emulator", help="run the local secrets API emulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--key",
        action="append",
        metavar="KEY[=ACCOUNT,...]",
        help="an API key it accepts, optionally limited to accounts (repeatable; "
        f"default: {SANDBOX_KEY!r} for any account)",
    )
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    serve.add_argument("--jitter", type=float, default=0.0, help="random extra seconds, up to")
    serve.add_argument(
        "--rate-limit", type=float, default=0.0, help="requests/s per account before 429 (0: none)"
    )
    serve.add_argument("--burst", type=int, default=None, help="rate limit bucket size")
    serve.add_argument(
        "--no-retry-after", action="store_true", help="answer 429 without a Retry-After header"
    )
    serve.add_argument("--error-rate", type=float, default=0.0, help="share answered 5xx")
    serve.add_argument(
        "--drop-rate", type=float, default=0.0, help="share whose connection is dropped"
    )
    serve.add_argument(
        "--write-then-fail-rate",
        type=float,
        default=0.0,
        help="share of writes applied, then answered 503 or dropped",
    )
    serve.add_argument("--seed", type=int, default=None, help="seed of the fault injection")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "emulator":
            return _serve(args)
        return _apply(args)
    except ManifestError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except (UsageError, ValueError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BulkSecretsError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED


def main_entry() -> None:
    sys.exit(main())


def _say(text: str) -> None:
    print(f"bulk-secrets: {text}", file=sys.stderr, flush=True)


def _apply(args: argparse.Namespace) -> int:
    options = ApplyOptions(
        base_url=args.base_url,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retry=RetryOptions(retries=args.retries),
        on_existing=OnExisting(args.on_existing),
    )
    manifest = load_manifest(args.manifest, format=args.format)
    for warning in manifest.warnings:
        _say(str(warning))
    accounts = _accounts(args, manifest)
    credentials = _credentials(args)
    report = open_report(args.report)
    summary = anyio.run(_run_apply, args.sandbox, manifest, accounts, credentials, options, report)
    _say(summary.line())
    if summary.aborted:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


async def _run_apply(
    sandbox: bool,
    manifest: Manifest,
    accounts: list[str],
    credentials: Credentials,
    options: ApplyOptions,
    report: ReportSink,
) -> Summary:
    async with AsyncExitStack() as stack:
        if sandbox:
            server = await stack.enter_async_context(
                emulator.running_emulator(emulator.EmulatorConfig(keys={SANDBOX_KEY: None}))
            )
            options = dataclasses.replace(options, base_url=server.base_url)
            _say(
                f"sandbox: applying to the built-in emulator at {server.base_url} "
                f"(account {accounts[0]!r}, throwaway key); nothing leaves this machine"
            )
        count = len(manifest.entries) * len(accounts)
        _say(f"applying {count} secrets to {len(accounts)} account(s) at {options.base_url}")
        return await apply_secrets(
            manifest.specs(accounts), credentials=credentials, options=options, report=report
        )


def _accounts(args: argparse.Namespace, manifest: Manifest) -> list[str]:
    if args.account:
        return [args.account]
    if manifest.accounts:
        return list(manifest.accounts)
    if args.sandbox:
        return [SANDBOX_ACCOUNT]
    from_env = os.environ.get("FIREWORKS_ACCOUNT_ID")
    if from_env:
        return [from_env]
    raise UsageError(
        "no target account: pass --account, name one in the manifest, or set FIREWORKS_ACCOUNT_ID"
    )


def _credentials(args: argparse.Namespace) -> Credentials:
    if args.sandbox:
        return Credentials(SecretValue(SANDBOX_KEY))
    key = os.environ.get("FIREWORKS_API_KEY")
    if not key:
        raise UsageError("no API key: set FIREWORKS_API_KEY (or use --sandbox to try it out)")
    return Credentials(SecretValue(key))


def _emulator_config(args: argparse.Namespace) -> emulator.EmulatorConfig:
    keys: dict[str, frozenset[str] | None] = {}
    for item in args.key or [SANDBOX_KEY]:
        key, _, accounts = item.partition("=")
        keys[key] = frozenset(a for a in accounts.split(",") if a) if accounts else None
    faults = emulator.Faults(
        latency=args.latency,
        jitter=args.jitter,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=not args.no_retry_after,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        write_then_fail_rate=args.write_then_fail_rate,
        seed=args.seed,
    )
    return emulator.EmulatorConfig(keys=keys, faults=faults)


def _serve(args: argparse.Namespace) -> int:
    config = _emulator_config(args)

    def ready(base_url: str) -> None:
        _say(f"emulator listening on {base_url} (keys: {len(config.keys)}); Ctrl-C stops it")

    anyio.run(lambda: emulator.serve(config, host=args.host, port=args.port, ready=ready))
    return EXIT_OK
