"""Benchmark ``bulk-secrets apply`` against the floor (bare aiohttp) and the naive loop.

    python benchmarks/run.py [--secrets N] [--quick] [--json-out PATH]
                             [--memory-rows 10000,100000,1000000] [--skip-memory] [--repeats N]

Every server is an emulator subprocess (``python -m bulk_secrets emulator``) bound to
127.0.0.1, a fresh one for each measured run so its state starts empty. The bare loop and the
CLI each run in a process of their own, started through ``peak_rss.py``, which reads the
process's peak RSS and CPU time when it exits; the sequential ``requests`` loop runs in this
process. What each scenario means and how the ratios are computed: ``benchmarks/README.md``.

The harness is split by what each part does, and run as a script (this folder is on
``sys.path``): ``measurements.py`` (what a run records), ``processes.py`` (the emulator and
client subprocesses), ``clients.py`` (the manifests and the three clients), ``scenarios.py``
(the scenarios) and ``report.py`` (targets, table and JSON). This file parses the arguments.

The exit code is 0 when every run gave a measurement (whether or not the targets were met), and
1 when a run crashed, timed out or printed no summary.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import measurements
from measurements import Settings
from report import git_state, machine_info, print_report, target_checks, write_json
from scenarios import (
    MEMORY_ROWS,
    QUICK_SEQUENTIAL_SAMPLE,
    QUICK_SWEEP,
    RATE_LIMITED_SECRETS,
    REPEATS,
    SEQUENTIAL_SAMPLE,
    SWEEP,
    run_all,
)

measurements.STARTED = time.perf_counter()  # the harness's clock starts: every import is done
DEFAULT_JSON_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_rows(text: str) -> tuple[int, ...]:
    try:
        rows = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if not rows or min(rows) < 1:
        raise argparse.ArgumentTypeError("row counts must be >= 1")
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark bulk-secrets apply on this machine.")
    parser.add_argument("--secrets", type=int, help="secrets per run (default 20000; quick: 300)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run: no memory")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT)
    parser.add_argument(
        "--memory-rows",
        type=parse_rows,
        help="CSV rows of the memory runs (default 10000,100000,1000000)",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs of bare and apply where a run lasts seconds; the median counts "
        f"(default {REPEATS}; quick: 1)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    secrets = args.secrets if args.secrets is not None else 300 if args.quick else 20_000
    if secrets < 1 or (args.repeats is not None and args.repeats < 1):
        raise SystemExit("--secrets and --repeats must be >= 1")
    memory_rows: tuple[int, ...] = args.memory_rows or MEMORY_ROWS
    if args.skip_memory or (args.quick and args.memory_rows is None):
        memory_rows = ()
    return Settings(
        secrets=secrets,
        quick=args.quick,
        sequential_sample=QUICK_SEQUENTIAL_SAMPLE if args.quick else SEQUENTIAL_SAMPLE,
        repeats=args.repeats if args.repeats is not None else 1 if args.quick else REPEATS,
        sweep=QUICK_SWEEP if args.quick else SWEEP,
        rate_limited_secrets=min(secrets, RATE_LIMITED_SECRETS),
        memory_rows=memory_rows,
        json_out=args.json_out,
    )


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: every emulator and client is stopped on the way


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(parse_args(argv))
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # A shell starts background jobs with SIGINT ignored, and children inherit an ignored
    # signal: the emulators would ignore the SIGINT that stops them. A handler is not inherited
    # (exec resets it), so with one here every child gets SIGINT's default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    machine = machine_info()
    print(
        f"bulk-secrets benchmark: {settings.secrets:,} secrets per run, "
        f"{machine['cpus_usable']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"aiohttp {machine['aiohttp']}, uvloop {machine['uvloop'] or 'not installed'}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scenarios = run_all(settings, Path(tmp))
    machine["load_average_at_end"] = os.getloadavg()
    machine["git_at_end"] = git_state()  # others may commit to bulk_secrets/ during a run
    checks = target_checks(scenarios)
    print_report(scenarios, checks, settings)
    failed = [m for s in scenarios.values() for m in s.measurements if m.error]
    write_json(settings, machine, time.perf_counter() - started, scenarios, checks, len(failed))
    print(f"\nwrote {settings.json_out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
