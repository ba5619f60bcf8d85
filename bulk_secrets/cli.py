"""The ``bulk-secrets`` command: arguments -> options -> one library call -> exit code."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from . import cli_emulator, emulator
from .errors import BulkSecretsError, ManifestError, UsageError
from .manifest import FORMATS, Manifest, load_manifests, read_accounts_file
from .models import Credentials, SecretValue
from .naming import account_id_problem
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulk-secrets",
        description="Provision Fireworks AI account secrets in bulk from manifests.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = commands.add_parser("apply", help="write every secret of the manifests")
    _manifest_arguments(apply)
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
    validate = commands.add_parser(
        "validate", help="check manifests offline and list what apply would write"
    )
    _manifest_arguments(validate)
    cli_emulator.add_parser(commands)
    return parser


def _manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifests",
        nargs="+",
        metavar="MANIFEST",
        help="YAML, JSON, CSV or dotenv manifest (by suffix); - reads stdin (with --format)",
    )
    parser.add_argument("--format", choices=FORMATS, help="manifest format (default: by suffix)")
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument(
        "--account",
        action="append",
        help="target account, repeatable; replaces the manifests' own accounts "
        "(default: the manifest's, else $FIREWORKS_ACCOUNT_ID)",
    )
    targets.add_argument(
        "--accounts-file", help="target accounts, one id per line (# comments); like --account"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "emulator":
            return cli_emulator.run(args, _say)
        if args.command == "validate":
            return _validate(args)
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


def _load(args: argparse.Namespace, *, sandbox: bool = False) -> list[Manifest]:
    accounts: list[str] | None = None
    if args.accounts_file:
        accounts = read_accounts_file(args.accounts_file)
    elif args.account:
        for account in args.account:
            problem = account_id_problem(account)
            if problem:
                raise UsageError(f"--account: {problem}")
        accounts = list(dict.fromkeys(args.account))
    from_env = os.environ.get("FIREWORKS_ACCOUNT_ID")
    default = [SANDBOX_ACCOUNT] if sandbox else [from_env] if from_env else []
    manifests = load_manifests(
        args.manifests, format=args.format, accounts=accounts, default_accounts=default
    )
    for manifest in manifests:
        for warning in manifest.warnings:
            _say(str(warning))
    return manifests


def _validate(args: argparse.Namespace) -> int:
    manifests = _load(args)
    rows = [("ACCOUNT", "KEY NAME", "SECRET ID", "SOURCE", "WHERE")]
    for manifest in manifests:
        rows.extend(
            (t.account, t.key_name, t.secret_id, t.source, t.location) for t in manifest.targets()
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
    accounts = {row[0] for row in rows[1:]}
    _say(f"valid: {len(rows) - 1} secrets for {len(accounts)} account(s); nothing was sent")
    return EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    options = ApplyOptions(
        base_url=args.base_url,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retry=RetryOptions(retries=args.retries),
        on_existing=OnExisting(args.on_existing),
    )
    manifests = _load(args, sandbox=args.sandbox)
    credentials = _credentials(manifests, sandbox=args.sandbox)
    report = open_report(args.report)
    summary = anyio.run(_run_apply, args.sandbox, manifests, credentials, options, report)
    _say(summary.line())
    if summary.aborted:
        return EXIT_ABORTED
    return EXIT_OK if summary.all_succeeded else EXIT_FAILED


async def _run_apply(
    sandbox: bool,
    manifests: list[Manifest],
    credentials: Credentials,
    options: ApplyOptions,
    report: ReportSink,
) -> Summary:
    async with AsyncExitStack() as stack:
        if sandbox:
            config = emulator.EmulatorConfig(keys={cli_emulator.SANDBOX_KEY: None})
            server = await stack.enter_async_context(emulator.running_emulator(config))
            options = dataclasses.replace(options, base_url=server.base_url)
            _say(
                f"sandbox: applying to the built-in emulator at {server.base_url} "
                "with a throwaway key; nothing leaves this machine"
            )
        count = sum(manifest.count for manifest in manifests)
        _say(f"applying {count} secrets at {options.base_url}")
        specs = itertools.chain.from_iterable(manifest.specs() for manifest in manifests)
        return await apply_secrets(specs, credentials=credentials, options=options, report=report)


def _credentials(manifests: list[Manifest], *, sandbox: bool) -> Credentials:
    if sandbox:
        return Credentials(SecretValue(cli_emulator.SANDBOX_KEY))
    per_account: dict[str, SecretValue] = {}
    for manifest in manifests:
        for account, var in manifest.api_keys.items():
            per_account.setdefault(account, SecretValue(os.environ[var]))
    key = os.environ.get("FIREWORKS_API_KEY")
    if not key:
        accounts = {t.account for m in manifests for t in m.targets()}
        missing = sorted(accounts - per_account.keys())
        if missing:
            raise UsageError(
                "no API key: set FIREWORKS_API_KEY (or use --sandbox to try it out); "
                f"accounts without a key of their own: {', '.join(missing[:5])}"
            )
    return Credentials(SecretValue(key) if key else None, per_account or None)
