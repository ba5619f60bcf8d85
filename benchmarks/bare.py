"""The floor: the plainest, fastest aiohttp loop that creates N secrets, C requests in flight.

``python benchmarks/bare.py --base-url URL --account A --count N --concurrency C`` with
``FIREWORKS_API_KEY`` set. C workers pull from one shared iterator and share one
``ClientSession`` with ``TCPConnector(limit=C)``. It is given every advantage over a real
client: every body is encoded (a bytes template, no ``json.dumps``) and every URL parsed before
the session opens, the headers are set once on the session, there is no timeout to arm, no
retry, no report, no plan, no manifest; each request is ``session.request(...)``, then
``await resp.read()``. Its garbage collector is set as apply's command sets its own
(``bulk_secrets.cli.collector``): what it holds before the session opens (the encoded
requests, the modules) frozen, and ``GC_THRESHOLD`` for the run.

It prints JSON on stdout: ``{"count", "succeeded", "listed", "statuses", "seconds", "loop"}``,
where ``succeeded`` counts the POSTs answered 200, ``listed`` the GETs answered 200, and
``seconds`` runs from just before the session opens to just after it closes (interpreter
start-up and the encoding excluded).

- ``--accounts K`` spreads the N secrets over K accounts ``A-00001``, ... (N/K each, account by
  account, as ``dataset.py`` writes the CSV manifest); ``--list`` sends one GET of each
  account's secrets before that account's POSTs (the requests of a run that lists first).
- ``--cafile CERT``: the base URL is https, verified against that CA.
- ``--loop``: ``auto`` (the default) is uvloop when it is installed, else asyncio's own.

Keys, values and accounts come from ``dataset.py``, as do the CSV manifests ``apply`` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import json
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp
from dataset import account_for, key_for, value_for
from yarl import URL

# apply's (``bulk_secrets.cli.collector.RUN_THRESHOLD``; a test holds them equal), not imported
# from it: the floor loads no module of the tool's.
GC_THRESHOLD = 10_000

Request = tuple[str, URL, bytes | None]  # method, URL, body


def requests_for(
    base_url: str, account: str, count: int, accounts: int, listing: bool
) -> list[Request]:
    """Every request of the run, encoded: per account, its GET (``listing``), then its POSTs."""
    base = base_url.rstrip("/")
    per_account = -(-count // accounts)
    requests: list[Request] = []
    for number in range(1, accounts + 1):
        name = account if accounts == 1 else account_for(account, number)
        url = URL(f"{base}/v1/accounts/{name}/secrets")
        if listing:
            requests.append(("GET", url, None))
        first = (number - 1) * per_account + 1
        for index in range(first, min(count, first + per_account - 1) + 1):
            key_name = key_for(index)
            secret_id = key_name.lower().replace("_", "-")
            body = (
                f'{{"name":"accounts/{name}/secrets/{secret_id}","keyName":"{key_name}",'
                f'"value":"{value_for(index)}"}}'
            )
            requests.append(("POST", url, body.encode()))
    return requests


async def send_all(
    requests: list[Request],
    key: str,
    concurrency: int,
    deadline: float,
    tls: ssl.SSLContext | None,
) -> tuple[Counter[str], float]:
    """Send every request; stop taking new ones after ``deadline`` seconds."""
    statuses: Counter[str] = Counter()  # "POST 200", "GET 200", "POST ClientOSError", ...
    pending: Iterator[Request] = iter(requests)
    started = time.perf_counter()
    stop_at = started + deadline

    async def worker(session: aiohttp.ClientSession) -> None:
        for method, url, body in pending:
            if time.perf_counter() > stop_at:
                return
            try:
                async with session.request(method, url, data=body) as resp:
                    await resp.read()
                    statuses[f"{method} {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[f"{method} {type(exc).__name__}"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, ssl=tls if tls is not None else True)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    no_timeout = aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None)
    async with (
        aiohttp.ClientSession(connector=connector, headers=headers, timeout=no_timeout) as session,
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
    parser.add_argument("--count", type=int, required=True, help="secrets to create")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--accounts", type=int, default=1, help="spread over this many accounts")
    parser.add_argument("--list", action="store_true", help="GET each account's secrets first")
    parser.add_argument("--cafile", help="the CA to verify the https server against")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds, at most")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args()
    key = os.environ.get("FIREWORKS_API_KEY")
    if not key:
        print("bare.py: set FIREWORKS_API_KEY", file=sys.stderr)
        return 2
    if args.count < 1 or args.concurrency < 1 or not 1 <= args.accounts <= args.count:
        print("bare.py: --count, --concurrency >= 1; 1 <= --accounts <= --count", file=sys.stderr)
        return 2
    tls = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    requests = requests_for(args.base_url, args.account, args.count, args.accounts, args.list)
    gc.freeze()  # as apply's command does once its manifests are read
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    factory, loop_name = loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        statuses, seconds = runner.run(
            send_all(requests, key, args.concurrency, args.deadline, tls)
        )
    record = {
        "count": args.count,
        "succeeded": statuses["POST 200"],
        "listed": statuses["GET 200"],
        "statuses": dict(statuses),
        "seconds": seconds,
        "loop": loop_name,
    }
    print(json.dumps(record))
    listed_all = not args.list or statuses["GET 200"] == args.accounts
    return 0 if statuses["POST 200"] == args.count and listed_all else 1


if __name__ == "__main__":
    sys.exit(main())
