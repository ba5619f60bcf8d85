"""Shards: ``--shard K/N`` splits a run's accounts over N processes (a Kubernetes Indexed Job, a
CI matrix), each account to exactly one shard by a stable hash of its id, the same on every
machine and Python version, so that an account's listing, pace and key stay in one process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``, counted from 1 as ``--shard 1/3``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"a shard is K/N with 1 <= K <= N, not {self}")

    def holds(self, account: str) -> bool:
        return shard_of(account, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(account: str, count: int) -> int:
    """The shard (1 to ``count``) that ``account`` belongs to: SHA-256 of its id, not
    Python's ``hash``, which differs between processes."""
    digest = hashlib.sha256(account.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_shard(text: str) -> Shard:
    """``K/N`` -> a :class:`Shard`; ValueError when it is not one."""
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit()):
        raise ValueError(f"{text!r} is not a shard: write it as K/N, as 1/3")
    return Shard(int(index), int(count))
