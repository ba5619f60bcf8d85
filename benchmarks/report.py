"""The output: the target checks, the printed table and details, and the JSON record."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from measurements import EXTRA_CONNECTIONS, Check, Measurement, Scenario, Settings
from scenarios import CONCURRENCY, LATENCY, RATE_LIMIT

HERE = Path(__file__).resolve().parent

# The targets checked at the end (PASS/MISS); a missing measurement is SKIP.
TARGET_BARE_0MS = 0.85
TARGET_SEQUENTIAL_50MS = 50.0
TARGET_BARE_50MS = 0.95
TARGET_GOODPUT_SHARE = 0.95
TARGET_429_SHARE = 0.05
TARGET_PEAK_RSS_MIB = 200.0
TARGET_PEAK_RSS_ROWS = 1_000_000
TARGET_GROWTH_BYTES_PER_ROW = 120.0


def check_ratio(name: str, m: Measurement | None, target: float, against: str) -> Check:
    """``m``'s rate over the bare loop's or the sequential loop's, against a target."""
    if m is None:
        return Check(name, "not measured", None)
    value = m.ratio_vs_bare if against == "bare" else m.ratio_vs_sequential
    if m.error or value is None:
        return Check(name, f"no measurement: {m.error or 'the ' + against + ' run failed'}", False)
    return Check(name, f"{value:.2f}x {against}", value >= target)


def target_checks(scenarios: dict[str, Scenario]) -> list[Check]:
    checks = []
    at_0ms, at_50ms = scenarios.get("latency-0ms"), scenarios.get("latency-50ms")
    if at_0ms:
        m = at_0ms.find("apply")
        name = f"apply >= {TARGET_BARE_0MS}x bare at 0 ms, c={CONCURRENCY}"
        checks.append(check_ratio(name, m, TARGET_BARE_0MS, "bare"))
    if at_50ms:
        m = at_50ms.find("apply")
        name = f"apply >= {TARGET_SEQUENTIAL_50MS:g}x sequential at 50 ms, c={CONCURRENCY}"
        checks.append(check_ratio(name, m, TARGET_SEQUENTIAL_50MS, "sequential"))
    if sweep := scenarios.get("sweep-50ms"):
        for m in sweep.measurements:
            if m.client == "apply":
                name = f"apply >= {TARGET_BARE_50MS}x bare at 50 ms, c={m.concurrency}"
                checks.append(check_ratio(name, m, TARGET_BARE_50MS, "bare"))
    if limited := scenarios.get("rate-limited"):
        for m in limited.measurements:
            name = (
                f"rate-limited, --max-rps {m.max_rps:g}: goodput >= "
                f"{TARGET_GOODPUT_SHARE:.0%} of {RATE_LIMIT}/s, <= {TARGET_429_SHARE:.0%} 429s, "
                "all succeeded"
            )
            if m.error:
                checks.append(Check(name, f"no measurement: {m.error}", False))
                continue
            share = m.rate / RATE_LIMIT
            observed = (
                f"goodput {m.rate:.0f}/s = {share:.0%}, 429s {m.share_429:.1%}, "
                f"{m.succeeded}/{m.secrets} succeeded"
            )
            passed = (
                share >= TARGET_GOODPUT_SHARE
                and m.share_429 <= TARGET_429_SHARE
                and m.all_succeeded
            )
            checks.append(Check(name, observed, passed))
    checks += memory_checks(scenarios.get("memory"))
    applies = [m for s in scenarios.values() for m in s.measurements if m.client == "apply"]
    measured = [m for m in applies if m.connections is not None]
    name = f"connections <= concurrency + {EXTRA_CONNECTIONS}, every apply run"
    if not measured:
        checks.append(Check(name, "not measured", None))
    else:
        over = [
            m for m in measured if m.connections is not None and m.connections > m.connection_limit
        ]
        worst = max(measured, key=lambda m: (m.connections or 0) - m.connection_limit)
        observed = (
            f"{len(over)} of {len(measured)} runs over; closest: {worst.connections} "
            f"at c={worst.concurrency} ({worst.scenario})"
        )
        checks.append(Check(name, observed, not over))
    return checks


def memory_checks(memory: Scenario | None) -> list[Check]:
    rss_name = f"peak RSS <= {TARGET_PEAK_RSS_MIB:g} MiB at {TARGET_PEAK_RSS_ROWS:,} rows"
    growth_name = f"RSS growth < {TARGET_GROWTH_BYTES_PER_ROW:g} bytes/row (100,000 -> 1,000,000)"
    if memory is None:
        return [Check(rss_name, "not measured", None), Check(growth_name, "not measured", None)]
    checks = []
    big = next((m for m in memory.measurements if m.secrets == TARGET_PEAK_RSS_ROWS), None)
    if big is None:
        checks.append(Check(rss_name, f"{TARGET_PEAK_RSS_ROWS:,} rows not measured", None))
    elif big.peak_rss_mib is None:
        checks.append(Check(rss_name, f"no measurement: {big.error}", False))
    else:
        observed = f"{big.peak_rss_mib:.1f} MiB"
        checks.append(Check(rss_name, observed, big.peak_rss_mib <= TARGET_PEAK_RSS_MIB))
    growth = memory.extra.get("growth")
    if growth is None:
        checks.append(Check(growth_name, "needs two memory runs", None))
    else:
        per_row = float(growth["bytes_per_row"])
        observed = f"{per_row:.1f} bytes/row ({growth['from_rows']:,} -> {growth['to_rows']:,})"
        exact = (growth["from_rows"], growth["to_rows"]) == (100_000, 1_000_000)
        passed = per_row < TARGET_GROWTH_BYTES_PER_ROW if exact else None
        checks.append(Check(growth_name, observed, passed))
    return checks


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_rows(scenarios: dict[str, Scenario]) -> list[list[str]]:
    header = [
        "scenario",
        "client",
        "conc",
        "secrets",
        "rate/s",
        "wall rate/s",
        "vs bare",
        "vs seq",
        "429s",
        "conns",
        "peak RSS",
        "cpu us/req",
        "srv cpu",
    ]
    rows = [header]
    for scenario in scenarios.values():
        for m in scenario.measurements:
            client = m.client
            if m.client == "apply" and scenario.name == "rate-limited":
                client = f"apply --max-rps {m.max_rps:g}"
            if m.sampled:
                client += " (sampled)"
            if m.error:
                rows.append([scenario.name, client, str(m.concurrency), f"{m.secrets:,}"])
                rows[-1].append(f"FAILED: {m.error[:60]}")
                continue
            per_request = "-"
            if m.client_cpu_seconds is not None and m.requests:
                per_request = f"{m.client_cpu_seconds / m.requests * 1e6:.0f}"
            server_busy = "-"
            if m.server_cpu_seconds is not None and m.wall_seconds > 0:
                server_busy = f"{m.server_cpu_seconds / m.wall_seconds:.0%}"
            conns = "-" if m.connections is None else str(m.connections)
            if m.client == "apply" and m.connections is not None:
                conns += f"/{m.connection_limit}"
            rss = "-" if m.peak_rss_mib is None else f"{m.peak_rss_mib:.1f} MiB"
            secrets = f"{m.succeeded:,}" + ("" if m.all_succeeded else f" of {m.secrets:,}")
            rows.append(
                [
                    scenario.name,
                    client,
                    str(m.concurrency),
                    secrets,
                    f"{m.rate:,.0f}",
                    f"{m.wall_rate:,.0f}",
                    fmt_ratio(m.ratio_vs_bare),
                    fmt_ratio(m.ratio_vs_sequential),
                    f"{m.share_429:.1%}",
                    conns,
                    rss,
                    per_request,
                    server_busy,
                ]
            )
    return rows


def print_report(scenarios: dict[str, Scenario], checks: list[Check], settings: Settings) -> None:
    rows = table_rows(scenarios)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        if len(row) < len(widths):  # a failed run: its message runs on
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)))
        else:
            print(
                "  ".join(
                    cell.rjust(w) if i >= 2 else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        if number == 0:
            print("  ".join("-" * w for w in widths))
    print()
    legend = (
        "rate/s: secrets created per second of work, timed inside the client (sequential: its "
        "loop; bare: session open to close; apply: the summary's durationSeconds). wall rate/s: "
        "per second of the whole client process, start-up included. vs bare / vs seq: rate over "
        "the bare loop's rate at the same concurrency and latency / over the sequential rate at "
        "the same latency. cpu us/req: client CPU per HTTP request (apply's includes start-up). "
        "srv cpu: the emulator's CPU over the client's wall time (near 100%: the emulator is the "
        "bottleneck). Sequential rows are sampled. Runs of a few seconds (0 ms; 50 ms at c=256) "
        f"are repeated {settings.repeats} time(s), bare and apply in turn; the median counts."
    )
    print(textwrap.fill(legend, width=100))
    if sweep := scenarios.get("sweep-50ms"):
        print()
        print(f"sweep at {LATENCY * 1000:g} ms: ceiling = concurrency / latency")
        for point in sweep.extra.get("points", []):
            print(
                f"  c={point['concurrency']:>3}: ceiling {point['ceiling']:>6,.0f}/s  "
                f"bare {point['bare_rate']:>6,.0f}/s ({point['bare_of_ceiling']:.0%})  "
                f"apply {point['apply_rate']:>6,.0f}/s ({point['apply_of_ceiling']:.0%})"
            )
    memory = scenarios.get("memory")
    growth = memory.extra.get("growth") if memory else None
    if growth:
        print()
        print(
            f"memory: peak RSS grows {growth['bytes_per_row']:.1f} bytes/row from "
            f"{growth['from_rows']:,} to {growth['to_rows']:,} rows"
        )
    print()
    print("requests by status (from /_emulator/stats), apply runs:")
    for scenario in scenarios.values():
        for m in scenario.measurements:
            if m.client == "apply" and not m.error:
                by_status = ", ".join(f"{k}: {n:,}" for k, n in m.requests_by_status.items())
                label = f"{scenario.name} c={m.concurrency} --max-rps {m.max_rps:g}"
                print(f"  {label}: {by_status}; {m.connections} connections")
    print()
    print("targets:")
    for check in checks:
        print(f"  {check.verdict:<4}  {check.name}: {check.observed}")


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "uvloop": installed_version("uvloop"),  # bulk-secrets and bare.py use it when installed
        "bulk_secrets": importlib.metadata.version("bulk-secrets"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        "git": git_state(),
    }


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit measured, and whether bulk_secrets/ had changes not committed (read only)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10
        )
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "bulk_secrets"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {
        "commit": commit.stdout.strip() or None,
        "bulk_secrets_uncommitted": bool(changes.stdout.strip()),
    }


def write_json(
    settings: Settings,
    machine: dict[str, Any],
    seconds: float,
    scenarios: dict[str, Scenario],
    checks: list[Check],
    failed_runs: int,
) -> None:
    """Every number, with the machine's description, to ``settings.json_out``."""
    record = {
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "seconds": seconds,
        "scenarios": {name: scenario.to_dict() for name, scenario in scenarios.items()},
        "checks": [dataclasses.asdict(c) | {"verdict": c.verdict} for c in checks],
        "failed_runs": failed_runs,
    }
    settings.json_out.parent.mkdir(parents=True, exist_ok=True)
    settings.json_out.write_text(json.dumps(record, indent=2, default=str) + "\n")
