"""Benchmark ``bulk-secrets apply`` against the floor (bare aiohttp) and the naive loop.

    python benchmarks/run.py [--secrets N] [--quick | --smoke] [--json-out PATH]
                             [--memory-rows 10000,20000,100000,200000,1000000] [--skip-memory]
                             [--repeats N]

Every server is an emulator subprocess (``python -m bulk_secrets emulator``, or
``tls_emulator.py`` for https) bound to 127.0.0.1, a fresh one for each measured run so its
state starts empty. The bare loop and the CLI each run in a process of their own, started
through ``peak_rss.py``, which reads the process's peak RSS and CPU time when it exits; the
sequential ``requests`` loop runs in this process. What each scenario means, how the ratios
are computed and the goals they are held to: ``benchmarks/README.md``.

The harness is split by what each part does, and run as a script (this folder is on
``sys.path``): ``measurements.py`` (what a run records), ``processes.py`` (the emulator and
client subprocesses), ``clients.py`` (the manifests and the three clients), ``runs.py`` (pairs
of bare and apply runs, medians), the scenarios (``scenarios.py`` with ``run_all``, ``cpu.py``,
``tls.py``, ``accounts.py``, ``scale.py``), ``targets.py`` (the goals: PASS, MISS or SKIP) and
``report.py`` (table, details and JSON). This file parses the arguments.

``--smoke`` is the harness's own check (``tests/test_benchmark_smoke.py``): every scenario and
every client, end to end, at tiny sizes: 40 secrets, sequential samples of 10 and 5, a sweep of
the one point the 50 ms scenario measures, CPU runs of 10 and 40 secrets on asyncio only, TLS
at 0 ms only, memory runs of 1, 10 and 100 rows, no repeats; the scenarios run at once, and
the runs of each take turns on emulators kept for them (a fresh account each, counters taken
as differences). Its numbers are not measurements.

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

import accounts
import cpu
import measurements
from measurements import Settings
from processes import LOOPS
from report import git_state, machine_info, print_report, write_json
from runs import CPU_BOUND_REPEATS, CPU_REPEATS, REPEATS
from scale import MEMORY_ROWS, SMOKE_MEMORY_ROWS
from scenarios import (
    QUICK_RATE_CONTROL_SECRETS,
    QUICK_SEQUENTIAL_SAMPLE,
    QUICK_SWEEP,
    RATE_CONTROL_SECRETS,
    RATE_LIMITED_SECRETS,
    SCENARIOS,
    SEQUENTIAL_SAMPLE,
    SMOKE_SECRETS,
    SMOKE_SEQUENTIAL_SAMPLE,
    SMOKE_SWEEP,
    SWEEP,
    run_all,
)
from targets import target_checks

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


def parse_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"not a scenario: {', '.join(unknown) or text!r}; they are {', '.join(SCENARIOS)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark bulk-secrets apply on this machine.")
    parser.add_argument(
        "--secrets", type=int, help="secrets per run (default 20000; quick: 300; smoke: 40)"
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="a small run: no memory runs")
    modes.add_argument(
        "--smoke",
        action="store_true",
        help="the harness's own test: as --quick, smaller, the scenarios at once on shared "
        "emulators (its numbers are not measurements)",
    )
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT)
    parser.add_argument(
        "--memory-rows",
        type=parse_rows,
        help="CSV rows of the memory runs (default 10000,20000,100000,200000,1000000)",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--only",
        type=parse_names,
        default=(),
        help=f"run only these scenarios, comma-separated ({', '.join(SCENARIOS)}; "
        "latency-50ms brings sweep-50ms)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs of bare and apply where a run lasts seconds; the median counts "
        f"(default {REPEATS}; {CPU_REPEATS} for CPU per secret, {CPU_BOUND_REPEATS} for many "
        "accounts and each comparison at once; quick and smoke: 1)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    small = args.quick or args.smoke
    secrets = args.secrets
    if secrets is None:
        secrets = SMOKE_SECRETS if args.smoke else 300 if args.quick else 20_000
    if secrets < 1 or (args.repeats is not None and args.repeats < 1):
        raise SystemExit("--secrets and --repeats must be >= 1")
    memory_rows: tuple[int, ...] = args.memory_rows or MEMORY_ROWS
    if args.smoke and args.memory_rows is None:
        memory_rows = SMOKE_MEMORY_ROWS
    if args.skip_memory or (args.quick and args.memory_rows is None):
        memory_rows = ()
    sequential_sample = SEQUENTIAL_SAMPLE
    cpu_secrets = cpu.CPU_SECRETS
    many_accounts, many_accounts_rss = accounts.MANY_ACCOUNTS, accounts.MANY_ACCOUNTS_RSS
    rate_control_secrets = RATE_CONTROL_SECRETS
    if args.quick:
        sequential_sample = QUICK_SEQUENTIAL_SAMPLE
        cpu_secrets = cpu.QUICK_CPU_SECRETS
        many_accounts = accounts.QUICK_MANY_ACCOUNTS
        many_accounts_rss = accounts.QUICK_MANY_ACCOUNTS_RSS
        rate_control_secrets = min(secrets, QUICK_RATE_CONTROL_SECRETS)
    if args.smoke:
        sequential_sample = SMOKE_SEQUENTIAL_SAMPLE
        cpu_secrets = cpu.SMOKE_CPU_SECRETS
        many_accounts = accounts.SMOKE_MANY_ACCOUNTS
        many_accounts_rss = accounts.SMOKE_MANY_ACCOUNTS_RSS
        rate_control_secrets = min(secrets, 5)
    return Settings(
        secrets=secrets,
        quick=args.quick,
        smoke=args.smoke,
        sequential_sample=sequential_sample,
        repeats=args.repeats if args.repeats is not None else 1 if small else REPEATS,
        cpu_bound_repeats=(
            args.repeats if args.repeats is not None else 1 if small else CPU_BOUND_REPEATS
        ),
        cpu_repeats=args.repeats if args.repeats is not None else 1 if small else CPU_REPEATS,
        sweep=(SMOKE_SWEEP if args.smoke else QUICK_SWEEP) if small else SWEEP,
        rate_limited_secrets=min(secrets, RATE_LIMITED_SECRETS),
        rate_control_secrets=rate_control_secrets,
        cpu_secrets=cpu_secrets,
        # A smoke run forces asyncio: the other scenarios run on the default loop (uvloop when
        # installed), so both ways of choosing the loop are exercised, in fewer processes.
        loops=("asyncio",) if args.smoke else LOOPS,
        many_accounts=many_accounts,
        # a memory run: none with --skip-memory, nor in a quick run without --memory-rows
        many_accounts_rss=many_accounts_rss if memory_rows else None,
        memory_rows=memory_rows,
        only=args.only,
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
    if settings.smoke:
        # Every request goes to 127.0.0.1 in plain HTTP: no process needs the system's CA
        # certificates, which aiohttp loads as it is imported (0.1 s of CPU in each emulator
        # and client, a dozen of them). The children inherit this.
        os.environ["SSL_CERT_FILE"] = os.devnull
        print(
            "smoke run: the scenarios at once, on shared emulators: no number is a measurement",
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
