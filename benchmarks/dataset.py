"""The benchmark's secrets: key names, values and account names, and the CSV manifests of them.

One place for what ``bare.py`` sends and ``apply`` reads (through ``clients.py`` and
``profile.py``), so that both send the same bytes. Standard library only: ``bare.py`` and
``profile.py`` import it, and ``profile.py`` keeps its own process small.
"""

from __future__ import annotations

from pathlib import Path


def key_for(index: int) -> str:
    return f"BENCH_{index:06d}"


def value_for(index: int) -> str:
    return f"bench-value-{index:07d}-abcdefghijklmnopqrstuvwxyz"


def account_for(account: str, number: int) -> str:
    return f"{account}-{number:05d}"


def write_manifest(path: Path, count: int, *, accounts: int = 1, account: str = "") -> Path:
    """A CSV manifest of ``count`` secrets, streamed to disk. With ``accounts`` > 1 it has an
    ``account`` column: ``ACCOUNT-00001``, ... ``count / accounts`` rows each, account by
    account (as bare.py spreads them)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        if accounts == 1:
            out.write("keyName,value\n")
            out.writelines(f"{key_for(i)},{value_for(i)}\n" for i in range(1, count + 1))
            return path
        out.write("account,keyName,value\n")
        per_account = -(-count // accounts)
        for i in range(1, count + 1):
            name = account_for(account, (i - 1) // per_account + 1)
            out.write(f"{name},{key_for(i)},{value_for(i)}\n")
    return path
