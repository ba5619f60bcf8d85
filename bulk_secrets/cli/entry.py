"""The ``bulk-secrets`` command: arguments -> options -> one library call -> exit code.

``validate`` works offline; ``apply``, ``plan`` and ``verify`` talk to the API
(:mod:`.api_commands`); ``emulator`` serves the local API (:mod:`.emulator_command`).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import BulkSecretsError, ManifestError, UsageError
from ..firectl_config import read_firectl_config
from ..manifest import (
    COMMAND_TIMEOUT,
    CSV_DELIMITERS,
    FORMATS,
    MAX_VALUE_BYTES,
    ManifestSet,
    load_manifests,
    read_accounts_file,
)
from ..naming import account_id_problem
from ..options import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RPS,
    DEFAULT_MAX_WAIT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    OnExisting,
)
from ..report import counted
from ..sandbox import SANDBOX_ACCOUNT
from ..sharding import Shard, parse_shard
from . import (
    api_commands,
    collector,
    emulator_command,
    list_command,
    logs,
    progress,
    report_command,
)
from .output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, say, with_hint
from .units import parse_duration, parse_size

KEY_NOTE = (
    "The API key is never a flag: a command line shows in ps, in shell history and in CI logs. "
    "It comes from a manifest's apiKeys, else $FIREWORKS_API_KEY, else firectl's "
    "~/.fireworks/auth.ini (firectl set-api-key; --profile for another)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulk-secrets",
        description="Provision Fireworks AI account secrets in bulk from manifests.",
        epilog=KEY_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    apply = commands.add_parser(
        "apply", help="converge the accounts to the manifests", epilog=KEY_NOTE
    )
    _manifest_arguments(apply)
    _api_arguments(apply)
    _plan_arguments(apply)
    progress.add_arguments(apply)
    apply.add_argument("--dry-run", action="store_true", help="show the plan; write nothing")
    apply.add_argument("--yes", action="store_true", help="confirm --prune's deletions")
    apply.add_argument(
        "--report", type=Path, help="write a per-secret report here (.json, .jsonl or .csv)"
    )
    apply.add_argument(
        "--only-failed",
        type=Path,
        metavar="REPORT",
        help="run again only what an earlier report of these manifests did not finish",
    )

    plan = commands.add_parser(
        "plan", help="show what apply would do; write nothing", epilog=KEY_NOTE
    )
    _manifest_arguments(plan)
    _api_arguments(plan)
    _plan_arguments(plan)
    progress.add_arguments(plan)
    plan.set_defaults(dry_run=True, yes=False, report=None, only_failed=None)

    verify = commands.add_parser(
        "verify",
        help="check that each account holds the manifests' secrets (exit 1 on drift)",
        epilog=KEY_NOTE,
    )
    _manifest_arguments(verify)
    _api_arguments(verify)
    progress.add_arguments(verify)
    verify.set_defaults(
        on_existing=OnExisting.UPDATE.value,
        prune=False,
        keep=[],
        state=None,
        dry_run=True,
        yes=False,
        report=None,
        only_failed=None,
    )

    validate = commands.add_parser(
        "validate", help="check manifests offline and list what apply would write"
    )
    _manifest_arguments(validate)
    _output_argument(validate, "json: print what would be written as JSON on stdout")
    logs.add_arguments(validate)
    validate.set_defaults(sandbox=False)
    list_command.add_parser(commands, _profile_argument, _api_arguments)
    report_command.add_parser(commands)
    emulator_command.add_parser(commands)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("bulk-secrets")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _output_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help=f"{what} (default: %(default)s)",
    )


def _profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="firectl's profile: ~/.fireworks/profiles/NAME/auth.ini (default: "
        "$FIREWORKS_PROFILE, else ~/.fireworks/auth.ini)",
    )


def _manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifests",
        nargs="+",
        metavar="MANIFEST",
        help="YAML, JSON, CSV or dotenv manifest (by suffix); - reads stdin (with --format)",
    )
    parser.add_argument("--format", choices=FORMATS, help="manifest format (default: by suffix)")
    parser.add_argument(
        "--max-value-size",
        type=parse_size,
        default=MAX_VALUE_BYTES,
        metavar="SIZE",
        help="the largest value, in UTF-8 bytes (512K, 1M; default: 1M); a larger one is a "
        "manifest error",
    )
    parser.add_argument(
        "--allow-commands",
        action="store_true",
        help="run the programs fromCommand entries name, for their values (never for a "
        "manifest you did not write, such as a pull request's)",
    )
    parser.add_argument(
        "--command-timeout",
        type=float,
        default=COMMAND_TIMEOUT,
        metavar="SECONDS",
        help="how long each fromCommand may run (default: %(default)g)",
    )
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        default=",",
        help="what separates a CSV manifest's fields: ',', ';' or '\\t' (tab) (default: ,)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="take only shard K of N of the accounts (each account, by a stable hash of its id, "
        "to exactly one shard): one process of a Kubernetes Indexed Job or a CI matrix",
    )
    _profile_argument(parser)
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument(
        "-a",
        "--account",
        "--account-id",
        dest="account",
        action="append",
        help="target account, repeatable; replaces the manifests' own accounts "
        "(default: the manifest's, else $FIREWORKS_ACCOUNT_ID, else firectl's account_id)",
    )
    targets.add_argument(
        "--accounts-file", help="target accounts, one id per line (# comments); like --account"
    )


def _api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        help=f"API base URL (default: $FIREWORKS_BASE_URL, else {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight at most (default: %(default)s)",
    )
    parser.add_argument(
        "--max-rps",
        type=float,
        default=DEFAULT_MAX_RPS,
        help="requests per second per account at most, lowered on 429 (0: no cap; default: "
        "%(default)g, half of the 6,000 a minute Fireworks documents per account, which the "
        "account's own inference traffic shares)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT,
        metavar="SECONDS",
        help="the longest Retry-After waited; a longer one stops that account "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--deadline",
        type=parse_duration,
        metavar="DURATION",
        help="the longest the whole run may take, as 90s, 15m or 1h30m: then requests in "
        "flight are cancelled and the rest reported not attempted (default: none)",
    )
    parser.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="CA certificates to trust (default: $SSL_CERT_FILE, else $REQUESTS_CA_BUNDLE, "
        "else the system's); TLS is always verified",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="retries of a transient failure (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds a request may wait for its whole answer (checked every eighth of it, "
        "at most every second; default: %(default)s)",
    )
    _output_argument(
        parser, "json: print the summary (for plan, the plan; for verify, the drift) on stdout"
    )
    logs.add_arguments(parser)
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="talk to a built-in emulator on 127.0.0.1 with a throwaway key: "
        "needs no account, sends nothing off this machine",
    )


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-existing",
        choices=[o.value for o in OnExisting],
        default=OnExisting.UPDATE.value,
        help="what to do with a secret that exists already (default: %(default)s)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the targeted accounts' secrets that no manifest names",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="GLOB",
        help="spare secrets whose id or keyName matches, from --prune (repeatable)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="remember fingerprints of the values written, and skip those unchanged",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = argv  # to say how to run it again
    logs.configure_from(args)
    threshold = gc.get_threshold()
    try:
        if args.command == "emulator":
            return emulator_command.run(args, say)
        _check_flags(args)
        if args.command == "list":
            return list_command.run(args)
        if args.command == "report":
            return report_command.run(args)
        with collector.paused_then_frozen():
            manifests = _load(args)
        if args.shard is not None and not manifests.accounts():
            say(f"shard {args.shard} holds none of the manifests' accounts: nothing to do")
            return EXIT_OK
        if args.command == "validate":
            return _validate(manifests, as_json=args.output == "json")
        return api_commands.run(args, manifests)
    except ManifestError as exc:
        say(with_hint(str(exc)), event="manifest_error", level="error")
        return EXIT_USAGE
    except (UsageError, ValueError) as exc:
        say(with_hint(f"error: {exc}"), event="usage_error", level="error")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted", event="interrupted", level="error")
        return EXIT_INTERRUPTED
    except BulkSecretsError as exc:
        say(f"error: {exc}", event="error", level="error")
        return EXIT_FAILED
    finally:
        collector.give_back(threshold)


def main_entry() -> None:
    sys.exit(main())


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _delimiter(text: str) -> str:
    delimiter = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if delimiter not in CSV_DELIMITERS:
        raise argparse.ArgumentTypeError("use ',', ';' or '\\t' (tab)")
    return delimiter


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing together are a usage error, not silently passed over."""
    if args.command in ("apply", "plan") and not args.prune:
        if args.keep:
            raise UsageError("--keep spares secrets from --prune: it needs --prune")
        if args.yes:
            raise UsageError("--yes confirms --prune's deletions: it needs --prune")
    if args.sandbox and args.base_url is not None:
        raise UsageError("--sandbox runs its own emulator: it takes no --base-url")


def _load(args: argparse.Namespace) -> ManifestSet:
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
    if args.sandbox:
        default = [SANDBOX_ACCOUNT]
    elif from_env:
        default = [from_env]
    else:
        from_file = read_firectl_config(args.profile).account_id
        default = [from_file] if from_file else []
    manifests = load_manifests(
        args.manifests,
        format=args.format,
        accounts=accounts,
        default_accounts=default,
        max_value_bytes=args.max_value_size,
        allow_commands=args.allow_commands,
        command_timeout=args.command_timeout,
        csv_delimiter=args.delimiter,
        shard=args.shard,
    )
    for manifest in manifests:
        for warning in manifest.warnings:
            say(str(warning), event="manifest_warning", level="warning")
    return manifests


def _validate(manifests: ManifestSet, *, as_json: bool) -> int:
    if as_json:
        targets = [
            {"account": t.account, "keyName": t.key_name, "secretId": t.secret_id,
             "source": t.source, "location": t.location}
            for t in manifests.targets()
        ]  # fmt: skip
        print(json.dumps({"valid": True, "secrets": targets}, indent=2))
        accounts = {t["account"] for t in targets}
        say(
            f"valid: {counted(len(targets), 'secret')} for {counted(len(accounts), 'account')}; "
            "nothing was sent",
            event="valid",
            secrets=len(targets),
            accounts=len(accounts),
        )
        return EXIT_OK
    rows = [("ACCOUNT", "KEY NAME", "SECRET ID", "SOURCE", "WHERE")]
    for manifest in manifests:
        rows.extend(
            (t.account, t.key_name, t.secret_id, t.source, t.location) for t in manifest.targets()
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]))
    accounts = {row[0] for row in rows[1:]}
    say(
        f"valid: {counted(len(rows) - 1, 'secret')} for {counted(len(accounts), 'account')}; "
        "nothing was sent",
        event="valid",
        secrets=len(rows) - 1,
        accounts=len(accounts),
    )
    return EXIT_OK
