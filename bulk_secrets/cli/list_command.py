"""``bulk-secrets list``: every secret of each account, as a table or as JSON; never a value."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from collections.abc import Callable

from ..errors import UsageError
from ..firectl_config import read_firectl_config
from ..models import Credentials
from ..naming import account_id_problem
from ..options import ApplyOptions
from ..planner import Listing
from ..provision import api_key_from, list_secrets, run_blocking
from ..report import counted
from ..sandbox import sandbox
from .api_commands import options_from
from .output import EXIT_FAILED, EXIT_OK, printable, say

Adder = Callable[[argparse.ArgumentParser], None]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], *more: Adder) -> None:
    """The ``list`` command, with ``more`` arguments it shares with the others."""
    listing = commands.add_parser("list", help="list each account's secrets (names, never values)")
    listing.add_argument(
        "-a",
        "--account",
        "--account-id",
        dest="account",
        action="append",
        required=True,
        help="an account to list, repeatable",
    )
    for add in more:
        add(listing)
    listing.set_defaults(on_existing="update", prune=False, keep=[])  # what options_from reads


def run(args: argparse.Namespace) -> int:
    for account in args.account:
        problem = account_id_problem(account)
        if problem:
            raise UsageError(f"--account: {problem}")
    code: int = run_blocking(functools.partial(_list, args, options_from(args)))
    return code


async def _list(args: argparse.Namespace, options: ApplyOptions) -> int:
    accounts = list(dict.fromkeys(args.account))
    if args.sandbox:
        async with sandbox() as (base_url, credentials):
            options = dataclasses.replace(options, base_url=base_url)
            found = await list_secrets(accounts, credentials=credentials, options=options)
    else:
        key = api_key_from(firectl=read_firectl_config(args.profile))
        if key is None:
            raise UsageError("no API key: set FIREWORKS_API_KEY (or run firectl set-api-key)")
        found = await list_secrets(accounts, credentials=Credentials(key), options=options)
    return show(found, as_json=args.output == "json")


def show(found: dict[str, Listing], *, as_json: bool) -> int:
    """Print each account's secrets; the accounts that could not be listed on stderr."""
    rows = [
        {"account": account, "secretId": secret_id, "keyName": key_name}
        for account, listing in found.items()
        for listed in (listing.secrets, listing.invalid)
        for secret_id, key_name in sorted(listed.items())
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = [("ACCOUNT", "SECRET ID", "KEY NAME")]
        for row in rows:
            secret_id = printable(row["secretId"], field=True)
            table.append((row["account"], secret_id, printable(row["keyName"], field=True)))
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        for account, secret_id, key_name in table:
            print(f"{account:<{widths[0]}}  {secret_id:<{widths[1]}}  {key_name}")
    unreachable = {a: listing.problem for a, listing in found.items() if listing.problem}
    for account, why in unreachable.items():
        say(f"account {account}: {printable(why or '', field=True)}")
    listed = len(found) - len(unreachable)
    say(f"{counted(len(rows), 'secret')} in {counted(listed, 'account')}")
    return EXIT_FAILED if unreachable else EXIT_OK
