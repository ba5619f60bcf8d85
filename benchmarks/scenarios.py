"""The scenarios: which clients run against which emulator, and the ratios between them.

A measured run (the default, and ``--quick``) runs one client at a time, each against a fresh
emulator. A smoke run (``--smoke``, for the harness's own test) runs the four scenarios at once,
in threads, and each takes its emulators from a shared pool: it checks that every part works,
and its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clients import Manifests, run_apply, run_bare, run_sequential, write_manifest
from measurements import Measurement, Scenario, Settings, ratio, since_start
from processes import Servers, stop_clients

CONCURRENCY = 64
LATENCY = 0.050  # seconds, the emulator's --latency in the 50 ms scenarios
SWEEP = (16, 64, 256)
QUICK_SWEEP = (16, 64)  # 64 is the 50 ms scenario's own run: one more point is measured
RATE_LIMIT = 200  # requests/s the rate-limited emulator allows, with a burst of as many
RATE_LIMITED_SECRETS = 6000
RATE_LIMITED_MAX_RPS = (0.0, 250.0)  # unknown limit (must adapt), and an overestimate
MEMORY_ROWS = (10_000, 100_000, 1_000_000)
SEQUENTIAL_SAMPLE = {0.0: 300, LATENCY: 100}  # sequential is sampled: it is far too slow
QUICK_SEQUENTIAL_SAMPLE = {0.0: 50, LATENCY: 20}
SMOKE_SECRETS = 40
# The 50 ms scenario's own point only (shown again, as in every sweep): each point of its own
# would cost two more client processes and an emulator, a second of CPU on two cores.
SMOKE_SWEEP = (CONCURRENCY,)
SMOKE_SEQUENTIAL_SAMPLE = {0.0: 10, LATENCY: 5}
REPEATS = 3  # runs of bare and of apply, interleaved, where one run lasts only seconds
SHORT_RUN_RATE = 2500.0  # requests/s of ceiling above which a run of N lasts only seconds


def progress(m: Measurement) -> None:
    m.ended_at = since_start()
    if m.error:
        line = f"FAILED: {m.error}"
    else:
        line = f"{m.succeeded}/{m.secrets} in {m.work_seconds:.2f}s = {m.rate:,.0f}/s"
    print(  # one write, so that lines from the threads of a smoke run do not interleave
        f"  {m.ended_at:6.1f}s [{m.scenario}] {m.client} c={m.concurrency}: {line}\n",
        end="",
        file=sys.stderr,
        flush=True,
    )


def bare_and_apply(
    servers: Servers,
    scenario: str,
    manifests: Manifests,
    n: int,
    concurrency: int,
    latency: float,
    repeats: int,
) -> tuple[Measurement, Measurement]:
    """Bare then apply, ``repeats`` times over, interleaved; each keeps its median run.

    Runs that last only seconds are at the mercy of anything else on the machine; the median
    of a few, taken turn about, is steadier than one.
    """
    bares: list[Measurement] = []
    applies: list[Measurement] = []
    for _ in range(repeats):
        bares.append(run_bare(servers, scenario, n, concurrency, latency))
        progress(bares[-1])
        manifest = manifests.get(n)
        applies.append(run_apply(servers, scenario, manifest, n, concurrency, latency=latency))
        progress(applies[-1])
    return median_run(bares), median_run(applies)


def median_run(runs: list[Measurement]) -> Measurement:
    """The run of median rate (a failed run, if any, so that the failure shows)."""
    failed = [m for m in runs if m.error]
    if failed:
        return failed[0]
    chosen = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
    if len(runs) > 1:
        chosen.repeat_rates = [m.rate for m in runs]
        rates = ", ".join(f"{rate:,.0f}" for rate in chosen.repeat_rates)
        chosen.note = (chosen.note + "; " if chosen.note else "") + f"median of {rates}/s"
    return chosen


def repeats_for(settings: Settings, concurrency: int, latency: float) -> int:
    short = latency == 0 or concurrency / latency >= SHORT_RUN_RATE
    return settings.repeats if short else 1


def scenario_latency(
    name: str, latency: float, settings: Settings, manifests: Manifests, servers: Servers
) -> Scenario:
    """Sequential (sampled), bare and apply at concurrency 64, one emulator latency."""
    scenario = Scenario(
        name,
        f"emulator latency {latency * 1000:g} ms, concurrency {CONCURRENCY}: "
        "sequential requests (sampled), bare aiohttp, bulk-secrets apply",
    )
    n = settings.secrets
    sample = min(n, settings.sequential_sample[latency])
    sequential = run_sequential(servers, name, latency, sample)
    progress(sequential)
    repeats = repeats_for(settings, CONCURRENCY, latency)
    bare, apply = bare_and_apply(servers, name, manifests, n, CONCURRENCY, latency, repeats)
    scenario.measurements += [sequential, bare, apply]
    for m in scenario.measurements:
        m.ratio_vs_bare = ratio(m, bare)
        m.ratio_vs_sequential = ratio(m, sequential)
    return scenario


SWEEP_NAME = "sweep-50ms"
SweepRuns = dict[int, tuple[Measurement, Measurement]]  # concurrency -> (bare, apply)


def sweep_runs(settings: Settings, manifests: Manifests, servers: Servers) -> SweepRuns:
    """The sweep's own runs: every point but c=CONCURRENCY, the 50 ms scenario's own run."""
    runs: SweepRuns = {}
    for concurrency in settings.sweep:
        if concurrency != CONCURRENCY:
            repeats = repeats_for(settings, concurrency, LATENCY)
            runs[concurrency] = bare_and_apply(
                servers, SWEEP_NAME, manifests, settings.secrets, concurrency, LATENCY, repeats
            )
    return runs


def scenario_sweep(settings: Settings, runs: SweepRuns, at_50ms: Scenario) -> Scenario:
    """Bare vs apply at 50 ms over concurrency; the ceiling is concurrency / latency."""
    scenario = Scenario(
        SWEEP_NAME,
        f"emulator latency {LATENCY * 1000:g} ms, bare vs apply over concurrency "
        f"{', '.join(map(str, settings.sweep))}; ceiling = concurrency / latency",
    )
    sequential = at_50ms.find("sequential")
    points = []
    for concurrency in settings.sweep:
        if concurrency in runs:
            bare, apply = runs[concurrency]
        else:  # the 50 ms scenario's own runs
            old_bare = at_50ms.find("bare", concurrency)
            old_apply = at_50ms.find("apply", concurrency)
            if old_bare is None or old_apply is None:
                raise AssertionError(f"{at_50ms.name} has no run at c={concurrency}")
            bare = dataclasses.replace(old_bare, scenario=scenario.name)
            apply = dataclasses.replace(old_apply, scenario=scenario.name)
            for m in (bare, apply):
                m.note = (m.note + "; " if m.note else "") + f"the run of {at_50ms.name}"
        pair = [bare, apply]
        ceiling = concurrency / LATENCY
        for m in pair:
            m.ratio_vs_bare = ratio(m, bare)
            m.ratio_vs_sequential = ratio(m, sequential)
        scenario.measurements += pair
        points.append(
            {
                "concurrency": concurrency,
                "ceiling": ceiling,
                "bare_rate": bare.rate,
                "apply_rate": apply.rate,
                "bare_of_ceiling": bare.rate / ceiling,
                "apply_of_ceiling": apply.rate / ceiling,
                "apply_vs_bare": apply.ratio_vs_bare,
            }
        )
    scenario.extra["points"] = points
    return scenario


def scenario_rate_limited(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    """Apply against an emulator that allows 200 requests/s (burst 200) and says Retry-After."""
    scenario = Scenario(
        "rate-limited",
        f"emulator rate limit {RATE_LIMIT}/s, burst {RATE_LIMIT}, with Retry-After; apply at "
        f"concurrency {CONCURRENCY} with --max-rps 0 (unknown limit) and --max-rps 250",
    )
    n = settings.rate_limited_secrets
    runs = []
    for max_rps in RATE_LIMITED_MAX_RPS:
        m = run_apply(
            servers,
            scenario.name,
            manifests.get(n),
            n,
            CONCURRENCY,
            rate_limit=RATE_LIMIT,
            max_rps=max_rps,
        )
        progress(m)
        scenario.measurements.append(m)
        runs.append(
            {
                "max_rps": max_rps,
                "goodput": m.rate,
                "goodput_of_limit": m.rate / RATE_LIMIT,
                "share_429": m.share_429,
                "all_succeeded": m.all_succeeded,
            }
        )
    scenario.extra["limit"] = RATE_LIMIT
    scenario.extra["runs"] = runs
    return scenario


def scenario_memory(settings: Settings, folder: Path, servers: Servers) -> Scenario:
    """Peak RSS of apply over CSV manifests of growing size (each deleted after its run)."""
    rows = settings.memory_rows
    scenario = Scenario(
        "memory",
        f"peak RSS of apply for CSV manifests of {', '.join(f'{r:,}' for r in rows)} rows "
        f"(concurrency {CONCURRENCY}, --max-rps 0, latency 0 ms, JSONL report)",
    )
    for count in rows:
        manifest = write_manifest(folder / f"memory-{count}.csv", count)
        try:
            m = run_apply(servers, scenario.name, manifest, count, CONCURRENCY)
        finally:
            manifest.unlink()
        progress(m)
        scenario.measurements.append(m)
    measured = sorted(
        (m.secrets, m.peak_rss_kib)
        for m in scenario.measurements
        if m.peak_rss_kib is not None and m.error is None
    )
    if len(measured) >= 2:
        pairs = dict(measured)
        if 100_000 in pairs and 1_000_000 in pairs:
            low, high = 100_000, 1_000_000
        else:
            (low, _), (high, _) = measured[-2], measured[-1]
        scenario.extra["growth"] = {
            "from_rows": low,
            "to_rows": high,
            "bytes_per_row": (pairs[high] - pairs[low]) * 1024 / (high - low),
        }
    return scenario


def run_all(settings: Settings, folder: Path) -> dict[str, Scenario]:
    manifests = Manifests(folder)
    with Servers(shared=settings.smoke) as servers:
        if settings.smoke:
            at_0ms, at_50ms, sweep, limited = run_at_once(settings, manifests, servers)
        else:  # one run at a time, in this order
            at_0ms = scenario_latency("latency-0ms", 0.0, settings, manifests, servers)
            at_50ms = scenario_latency("latency-50ms", LATENCY, settings, manifests, servers)
            sweep = sweep_runs(settings, manifests, servers)
            limited = scenario_rate_limited(settings, manifests, servers)
        scenarios: dict[str, Scenario] = {}
        scenarios["latency-0ms"] = at_0ms
        scenarios["latency-50ms"] = at_50ms
        scenarios[SWEEP_NAME] = scenario_sweep(settings, sweep, at_50ms)
        scenarios["rate-limited"] = limited
        if settings.memory_rows:
            scenarios["memory"] = scenario_memory(settings, folder, servers)
    return scenarios


def run_at_once(
    settings: Settings, manifests: Manifests, servers: Servers
) -> tuple[Scenario, Scenario, SweepRuns, Scenario]:
    """The four scenarios in four threads (a smoke run): each has emulators of its own."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="scenario") as pool:
        at_0ms = pool.submit(scenario_latency, "latency-0ms", 0.0, settings, manifests, servers)
        at_50ms = pool.submit(
            scenario_latency, "latency-50ms", LATENCY, settings, manifests, servers
        )
        sweep = pool.submit(sweep_runs, settings, manifests, servers)
        limited = pool.submit(scenario_rate_limited, settings, manifests, servers)
        try:
            return at_0ms.result(), at_50ms.result(), sweep.result(), limited.result()
        except BaseException:  # a bug, or this harness being stopped: stop the other threads
            servers.close()  # their next run fails at once
            stop_clients()  # and so do the runs going on
            raise
