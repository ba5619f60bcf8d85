"""``bulk-secrets emulator``: serve the local secrets API, with its fault knobs as flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..provision import run_blocking
from ..sandbox import SANDBOX_KEY
from . import logs
from .output import EXIT_USAGE

if TYPE_CHECKING:  # the emulator (aiohttp.web) loads only when it is used
    from .. import emulator


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("emulator", help="run the local secrets API emulator")
    serve.set_defaults(**logs.DEFAULTS)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    serve.add_argument(
        "--key",
        action="append",
        metavar="KEY[=ACCOUNT,...]",
        help="an API key it accepts, optionally limited to accounts (repeatable; "
        f"default: {SANDBOX_KEY!r} for any account)",
    )
    knobs = serve.add_argument_group("fault injection")
    knobs.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    knobs.add_argument("--jitter", type=float, default=0.0, help="random extra seconds, up to")
    knobs.add_argument(
        "--write-latency", type=float, default=0.0, help="more seconds for each write"
    )
    knobs.add_argument(
        "--rate-limit", type=float, default=0.0, help="requests/s per account before 429 (0: none)"
    )
    knobs.add_argument("--burst", type=int, default=None, help="rate limit bucket size")
    knobs.add_argument(
        "--no-retry-after", action="store_true", help="answer 429 without a Retry-After header"
    )
    knobs.add_argument(
        "--rate-limit-share",
        type=float,
        default=0.0,
        help="share answered 429 at random, with Retry-After: 1",
    )
    knobs.add_argument("--error-rate", type=float, default=0.0, help="share answered 5xx")
    knobs.add_argument(
        "--drop-rate", type=float, default=0.0, help="share whose connection is dropped"
    )
    knobs.add_argument(
        "--write-then-fail-rate",
        type=float,
        default=0.0,
        help="share of writes applied, then answered 503 or dropped",
    )
    knobs.add_argument("--seed", type=int, default=None, help="seed of the fault injection")


def config_from(args: argparse.Namespace) -> emulator.EmulatorConfig:
    from .. import emulator

    keys: dict[str, frozenset[str] | None] = {}
    for item in args.key or [SANDBOX_KEY]:
        key, _, accounts = item.partition("=")
        keys[key] = frozenset(a for a in accounts.split(",") if a) if accounts else None
    faults = emulator.Faults(
        latency=args.latency,
        jitter=args.jitter,
        write_latency=args.write_latency,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=not args.no_retry_after,
        rate_limit_share=args.rate_limit_share,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        write_then_fail_rate=args.write_then_fail_rate,
        seed=args.seed,
    )
    return emulator.EmulatorConfig(keys=keys, faults=faults)


def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from .. import emulator

    config = config_from(args)

    def ready(base_url: str) -> None:
        say(f"emulator listening on {base_url} (keys: {len(config.keys)}); Ctrl-C stops it")
        key = SANDBOX_KEY if SANDBOX_KEY in config.keys else "<one of its --key values>"
        say(f"point the CLI at it: FIREWORKS_API_KEY={key} bulk-secrets apply MANIFEST")
        say(f"  -a ACCOUNT --base-url {base_url}")

    try:
        run_blocking(lambda: emulator.serve(config, host=args.host, port=args.port, ready=ready))
    except OSError as exc:  # the address is taken, or not this machine's
        say(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}")
        return EXIT_USAGE
    return 0
