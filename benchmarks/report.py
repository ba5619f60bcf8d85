"""The output: the printed table, details and target list, and the JSON record."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from measurements import Check, Measurement, Scenario, Settings
from processes import DEFAULT_LOOP, LOOP_ENV, MALLOC_ENV
from runs import LATENCY
from together import placement

HERE = Path(__file__).resolve().parent
# Bare against bare at once measured 0.982x to 1.031x over 22 repeats in four runs on
# 2026-12-02, where runs one after the other spread over 1.5x: past this, the CPU ratio is
# printed as rough.
SAME_TOLERANCE = 0.03


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def client_label(m: Measurement) -> str:
    label = m.client
    if m.client == "apply":
        if m.dry_run:
            label += " --dry-run"
        elif m.max_rps is None:
            label += " (default rate)"
        elif m.max_rps:
            label += f" --max-rps {m.max_rps:g}"
    if "no Retry-After" in m.server:
        label += " (429s without Retry-After)"
    if m.sampled:
        label += " (sampled)"
    return label


def table_rows(scenarios: dict[str, Scenario]) -> list[list[str]]:
    header = [
        "scenario",
        "client",
        "loop",
        "ms",
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
            secrets = f"{m.succeeded:,}" + ("" if m.all_succeeded else f" of {m.secrets:,}")
            if m.accounts > 1:
                secrets += f" ({m.accounts:,} acc)"
            head = [
                scenario.name,
                client_label(m),
                m.loop or "-",
                f"{m.latency_ms:g}",
                str(m.concurrency),
            ]
            if m.error:
                rows.append([*head, f"{m.secrets:,}", f"FAILED: {m.error[:60]}"])
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
            rows.append(
                [
                    *head,
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


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    numeric_from = 3  # ms, conc, secrets, ...: right-aligned
    for number, row in enumerate(rows):
        if len(row) < len(widths):  # a failed run: its message runs on
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)))
        else:
            print(
                "  ".join(
                    cell.rjust(w) if i >= numeric_from else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        if number == 0:
            print("  ".join("-" * w for w in widths))


def print_report(scenarios: dict[str, Scenario], checks: list[Check], settings: Settings) -> None:
    print_table(table_rows(scenarios))
    print()
    legend = (
        "rate/s: secrets created per second of work, timed inside the client (sequential: its "
        "loop; bare: session open to close; apply: the summary's durationSeconds; a dry run: "
        "secrets planned per second of the process). wall rate/s: per second of the whole "
        "client process, start-up included. vs bare / vs seq: rate over the bare loop's rate "
        "at the same concurrency and latency (many-accounts: API requests per second, listing "
        "included) / over the sequential rate at the same latency. cpu us/req: client CPU per "
        "HTTP request (apply's includes start-up). srv cpu: the emulator's CPU over the "
        "client's wall time (near 100%: the emulator is the bottleneck). Sequential rows are "
        f"sampled. Runs of a few seconds are repeated {settings.repeats} time(s), bare and "
        "apply in turn; the median counts. Where the client's CPU may bound the rate (CPU per "
        "secret, 0 ms, c=256 and c=1,024 at 50 ms, TLS, the linear chain), the goal is judged "
        "by bare and apply run at once on one core (the details below). Bare and apply runs "
        f"compared with each other run with {' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())}."
    )
    print(textwrap.fill(legend, width=100))
    print_details(scenarios)
    print()
    print("targets:")
    groups: defaultdict[str, list[Check]] = defaultdict(list)
    for check in checks:
        groups[check.group].append(check)
    for group, members in groups.items():
        print(f"  {group}:")
        for check in members:
            print(f"    {check.verdict:<4}  {check.name}: {check.observed}")


def print_details(scenarios: dict[str, Scenario]) -> None:
    if sweep := scenarios.get("sweep-50ms"):
        print()
        print(f"sweep at {LATENCY * 1000:g} ms: ceiling = concurrency / latency")
        for point in sweep.extra.get("points", []):
            print(
                f"  c={point['concurrency']:>4}: ceiling {point['ceiling']:>6,.0f}/s  "
                f"bare {point['bare_rate']:>6,.0f}/s ({point['bare_of_ceiling']:.0%})  "
                f"apply {point['apply_rate']:>6,.0f}/s ({point['apply_of_ceiling']:.0%})"
            )
    if cpu := scenarios.get("cpu-per-secret"):
        where = placement(cpu.extra.get("pinned"))
        print()
        print(
            f"CPU per secret ({cpu.extra['large']:,} secrets less {cpu.extra['small']:,}; "
            f"bare and apply at once, {where}; medians, every repeat in brackets):"
        )
        for loop, record in cpu.extra["loops"].items():
            parts = []
            for client in ("bare", "apply"):
                us = record[f"{client}_us_per_secret"]
                each = brackets(record[f"{client}_us_per_secret_repeats"], ".1f")
                parts.append(f"{client} {'-' if us is None else f'{us:.1f}'} us {each}")
            print(f"  {loop:<8} {'; '.join(parts)}")
            print(f"           apply/bare {ratio_with_interval(record)}")
            same = record.get("same_ratio")
            if record.get("same_ratio_repeats"):
                print(f"           {bare_against_bare(record)}")
            if same is not None and abs(same - 1) > SAME_TOLERANCE:
                print(
                    f"           bare against itself is {same:.3f}x, not 1.00x within "
                    f"{SAME_TOLERANCE:.2f}: the ratio is rough"
                )
            print(f"           throughput at {cpu.extra['large']:,}, while both created: "
                  f"apply/bare {fmt_ratio(record['throughput_at_once'])}")  # fmt: skip
    for label, record in comparisons_at_once(scenarios):
        print()
        print_at_once(label, record)
    if control := scenarios.get("rate-control"):
        print()
        print("random 429s, apply at its default rate:")
        for run in control.extra.get("runs", []):
            told = "Retry-After 1 s" if run["retry_after"] else "no Retry-After"
            print(
                f"  {run['share_429_asked']:>4.0%} asked ({told}): goodput "
                f"{run['goodput']:6.1f}/s, {fmt_ratio(run['goodput_vs_no_429'])} of no 429s, "
                f"429s {run['share_429']:.1%}"
            )
    if many := scenarios.get("many-accounts"):
        print()
        t = many.extra["throughput"]
        print(
            f"many accounts: {t['accounts']:,} x {t['secrets_per_account']}: apply "
            f"{t['apply_requests']:,} requests at {t['apply_request_rate']:,.0f}/s, bare "
            f"{t['bare_requests']:,} at {t['bare_request_rate']:,.0f}/s = "
            f"{fmt_ratio(t['apply_vs_bare'])}"
        )
        if memory := many.extra.get("memory"):
            rss = memory["peak_rss_mib"]
            print(
                f"  peak RSS at {memory['accounts']:,} x {memory['secrets_per_account']}: "
                + ("-" if rss is None else f"{rss:.1f} MiB")
            )
    if memory := scenarios.get("memory"):
        print()
        for g in memory.extra.get("growth", []):
            print(
                f"memory: peak RSS grows {g['bytes_per_row']:.1f} bytes/row from "
                f"{g['from_rows']:,} to {g['to_rows']:,} rows"
            )
        for count, record in memory.extra.get("chain_at_once", {}).items():
            print_at_once(f"linear chain, {count:,} rows", record)
        if linear := memory.extra.get("linear"):
            flat = linear["rate_min_over_max"]
            print(
                f"linear: apply/bare at once {brackets(linear['ratios'], '.3f')} at "
                f"{', '.join(f'{r:,}' for r in linear['rows'])} rows (min/max "
                f"{'-' if flat is None else f'{flat:.3f}'}); in turn "
                f"{brackets(linear['rates_in_turn'], ',.0f')}/s; growth "
                f"{linear['bytes_per_row'][0]:.1f} then {linear['bytes_per_row'][1]:.1f} "
                "bytes/row"
            )
        dry = memory.extra.get("dry_run")
        if dry and dry["peak_rss_mib"] is not None:
            print(f"dry run: peak RSS {dry['peak_rss_mib']:.1f} MiB at {dry['rows']:,} rows")
    print()
    print("requests by status (from /_emulator/stats), apply runs:")
    for scenario in scenarios.values():
        for m in scenario.measurements:
            if m.client == "apply" and not m.error:
                by_status = ", ".join(f"{k}: {n:,}" for k, n in m.requests_by_status.items())
                label = f"{scenario.name} {client_label(m)} {m.latency_ms:g} ms c={m.concurrency}"
                print(f"  {label}: {by_status}; {m.connections} connections")


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
        "uvloop": installed_version("uvloop"),
        "default_loop": DEFAULT_LOOP,  # what bulk-secrets picks unforced; forced with LOOP_ENV
        "loop_env": LOOP_ENV,
        "malloc_env": MALLOC_ENV,
        "bulk_secrets": importlib.metadata.version("bulk-secrets"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        "git": git_state(),
    }


def comparisons_at_once(scenarios: dict[str, Scenario]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The throughput comparisons made at once, each with its label (the linear chain's are
    printed with the memory scenario)."""
    if (at_0ms := scenarios.get("latency-0ms")) and (record := at_0ms.extra.get("at_once")):
        yield f"0 ms, c={at_0ms.measurements[-1].concurrency}", record
    for point in scenarios["sweep-50ms"].extra["points"] if "sweep-50ms" in scenarios else []:
        if point.get("at_once"):
            yield f"50 ms, c={point['concurrency']}", point["at_once"]
    if tls := scenarios.get("tls"):
        for latency, record in tls.extra.get("at_once", {}).items():
            yield f"TLS at {latency} ms, c={tls.measurements[-1].concurrency}", record


def print_at_once(label: str, record: dict[str, Any]) -> None:
    """A ``together.rates_at_once`` record: the ratio and each repeat's rates."""
    print(
        f"{label}, bare and apply at once ({placement(record['pinned'])}): apply/bare "
        f"{ratio_with_interval(record)}; "
        f"while both created, bare {brackets(record['bare_rates'], ',.0f')}/s, "
        f"apply {brackets(record['apply_rates'], ',.0f')}/s; CPU of the whole processes, "
        f"apply/bare {brackets(record['cpu_ratios'], '.3f')}"
    )
    if record.get("same_ratio_repeats"):
        print(f"  {bare_against_bare(record)}")
    for error in record["errors"]:
        print(f"  failed: {error}")


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ratio_with_interval(record: dict[str, Any]) -> str:
    """A comparison's median ratio, its 90% interval, and every repeat's ratio."""
    interval = record.get("ratio_interval")
    within = f" (90% interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    return f"{fmt_ratio(record['ratio'])}{within} {brackets(record['ratio_repeats'], '.3f')}"


def bare_against_bare(record: dict[str, Any]) -> str:
    """A comparison's check of bare against bare at once: its median and every repeat."""
    return (
        f"bare/bare at once {fmt_ratio(record['same_ratio'])} "
        f"{brackets(record['same_ratio_repeats'], '.3f')}: the method's own noise"
    )


def brackets(values: list[float | None], spec: str) -> str:
    """``values`` in brackets, each as ``spec`` says ("-" for a run that failed)."""
    return "[" + ", ".join("-" if v is None else format(v, spec) for v in values) + "]"


def git_state() -> dict[str, Any]:
    """The commit checked out, read from ``.git`` without running git (which may take the
    index lock, in a working tree others edit and commit in). Changes not committed are not
    seen: the commit is what the tree was based on."""
    git = HERE.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return {"commit": head}
        ref = head.removeprefix("ref: ")
        loose = git / ref
        if loose.is_file():
            return {"commit": loose.read_text().strip(), "ref": ref}
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return {"commit": line.split()[0], "ref": ref}
    except OSError:
        pass
    return {}


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
