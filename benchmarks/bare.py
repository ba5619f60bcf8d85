"""The floor: the plainest aiohttp loop that creates N secrets, C requests in flight.

``python benchmarks/bare.py --base-url URL --account A --count N --concurrency C`` with
``FIREWORKS_API_KEY`` set. C workers pull from one shared iterator and share one
``ClientSession`` with ``TCPConnector(limit=C)``; each POST is a ``json.dumps`` body, then
``await resp.read()``. No retries, no report, no plan, no manifest. It prints JSON on stdout:
``{"count", "succeeded", "statuses", "seconds", "loop"}``, where ``seconds`` runs from just
before the session opens to just after it closes (interpreter start-up excluded).

The event loop is the one ``bulk-secrets`` picks (``--loop auto``): uvloop when it is installed,
else asyncio's own, so that the floor and the CLI run on the same loop.

Keys and values are the same as in the CSV manifest that ``run.py`` writes for ``apply``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp


def key_for(index: int) -> str:
    return f"BENCH_{index:06d}"  # the same as clients.py's


def value_for(index: int) -> str:
    return f"bench-value-{index:07d}-abcdefghijklmnopqrstuvwxyz"  # the same as clients.py's


async def create_all(
    base_url: str, account: str, key: str, count: int, concurrency: int, deadline: float
) -> tuple[Counter[str], float]:
    """POST ``count`` secrets; stop taking new ones after ``deadline`` seconds."""
    url = f"{base_url.rstrip('/')}/v1/accounts/{account}/secrets"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    statuses: Counter[str] = Counter()
    indices: Iterator[int] = iter(range(1, count + 1))
    started = time.perf_counter()
    stop_at = started + deadline

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in indices:
            if time.perf_counter() > stop_at:
                return
            key_name = key_for(index)
            secret_id = key_name.lower().replace("_", "-")
            body = json.dumps(
                {
                    "name": f"accounts/{account}/secrets/{secret_id}",
                    "keyName": key_name,
                    "value": value_for(index),
                }
            ).encode()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        asyncio.TaskGroup() as workers,
    ):
        for _ in range(concurrency):
            workers.create_task(worker(session))
    return statuses, time.perf_counter() - started


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """The event loop to run on, and its name: ``auto`` is uvloop when it is installed."""
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return asyncio.new_event_loop, "asyncio"
    uvloop = importlib.import_module("uvloop")
    return uvloop.new_event_loop, "uvloop"


def main() -> int:
    parser = argparse.ArgumentParser(description="the plainest aiohttp loop: the floor")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds, at most")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args()
    key = os.environ.get("FIREWORKS_API_KEY")
    if not key:
        print("bare.py: set FIREWORKS_API_KEY", file=sys.stderr)
        return 2
    factory, loop_name = loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        statuses, seconds = runner.run(
            create_all(
                args.base_url, args.account, key, args.count, args.concurrency, args.deadline
            )
        )
    record = {
        "count": args.count,
        "succeeded": statuses["200"],
        "statuses": dict(statuses),
        "seconds": seconds,
        "loop": loop_name,
    }
    print(json.dumps(record))
    return 0 if statuses["200"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
