"""The scenarios: which clients run against which emulator, and the ratios between them.

This module holds the throughput and rate scenarios and ``run_all``; ``cpu.py`` (CPU per
secret on each event loop), ``tls.py`` (https), ``accounts.py`` (many accounts) and
``scale.py`` (memory, and how cost grows with the manifest) hold the others. Every scenario is
a function ``(settings, manifests, servers) -> Scenario``.

A measured run (the default, and ``--quick``) runs one client at a time, each against a fresh
emulator. A smoke run (``--smoke``, for the harness's own test) runs the scenarios at once, in
threads, and each takes its emulators from a shared pool: it checks that every part works, and
its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import accounts
import cpu
import scale
import tls
from clients import Client, Manifests, run_apply, run_sequential
from measurements import Measurement, Scenario, Settings, ratio
from processes import Servers, Setup, stop_clients
from runs import (
    CONCURRENCY,
    LATENCY,
    bare_and_apply,
    judged_at_once,
    progress,
    repeats_for,
    secrets_for,
)
from together import rates_at_once

SWEEP = (16, 64, 256, 1024)
QUICK_SWEEP = (16, 64)  # 64 is the 50 ms scenario's own run: one more point is measured
RATE_LIMIT = 200  # requests/s the rate-limited emulator allows, with a burst of as many
RATE_LIMITED_SECRETS = 6000
# --max-rps, and whether the 429s say Retry-After: an unknown limit (must adapt), an
# overestimate, and the unknown limit again with 429s that do not say when to come back (the
# Fireworks documents do not say whether its 429s carry one).
RATE_LIMITED_RUNS = ((0.0, True), (250.0, True), (0.0, False))
# The random-429 scenario (issue 13): a share of requests answered 429 with Retry-After: 1,
# whatever the rate; apply at its default --max-rps, as users run it. Then the same shares
# without a Retry-After.
RATE_CONTROL_RUNS = ((0.0, True), (0.01, True), (0.03, True), (0.01, False), (0.03, False))
RATE_CONTROL_SECRETS = 2000
QUICK_RATE_CONTROL_SECRETS = 150  # at 3% 429s, about 25 s
RATE_CONTROL_LATENCY = 0.020
RATE_CONTROL_CONCURRENCY = 32
SEQUENTIAL_SAMPLE = {0.0: 300, LATENCY: 100}  # sequential is sampled: it is far too slow
QUICK_SEQUENTIAL_SAMPLE = {0.0: 50, LATENCY: 20}
SMOKE_SECRETS = 40
SAME_REPEATS_AT_ONCE = 2  # at 0 and 50 ms: repeats of bare against bare at once, its noise
# The 50 ms scenario's own point only (shown again, as in every sweep): each point of its own
# would cost two more client processes and an emulator, a second of CPU on two cores.
SMOKE_SWEEP = (CONCURRENCY,)
SMOKE_SEQUENTIAL_SAMPLE = {0.0: 10, LATENCY: 5}
# Scenarios a smoke run runs at once. Its cost is CPU (a process's start-up is about 0.5 s of
# it, on two cores): more at once would not end it sooner, only start more emulators.
SMOKE_THREADS = 3


def scenario_latency(
    name: str, latency: float, settings: Settings, manifests: Manifests, servers: Servers
) -> Scenario:
    """Sequential (sampled), bare and apply at concurrency 64, one emulator latency; at 0 ms,
    bare and apply again, at once (``together.rates_at_once``)."""
    scenario = Scenario(
        name,
        f"emulator latency {latency * 1000:g} ms, concurrency {CONCURRENCY}: "
        "sequential requests (sampled), bare aiohttp, bulk-secrets apply (default loop)",
    )
    n = settings.secrets
    sample = min(n, settings.sequential_sample[latency])
    sequential = run_sequential(servers, name, latency, sample)
    progress(sequential)
    repeats = repeats_for(settings, CONCURRENCY, latency)
    setup = Setup(latency=latency)
    bare, apply = bare_and_apply(servers, name, manifests, n, CONCURRENCY, setup, repeats)
    scenario.measurements += [sequential, bare, apply]
    for m in scenario.measurements:
        m.ratio_vs_bare = ratio(m, bare)
        m.ratio_vs_sequential = ratio(m, sequential)
    if judged_at_once(CONCURRENCY, latency):  # the ratio that counts is taken at once
        scenario.extra["at_once"] = rates_at_once(
            name, servers, manifests, n, CONCURRENCY, setup, repeats_at_once(settings)
        )
    return scenario


def repeats_at_once(settings: Settings) -> tuple[int, int]:
    """A throughput comparison's repeats at once: of bare and apply, then of bare and bare."""
    return settings.cpu_bound_repeats, min(SAME_REPEATS_AT_ONCE, settings.cpu_bound_repeats)


def scenario_0ms(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    return scenario_latency("latency-0ms", 0.0, settings, manifests, servers)


def scenario_50ms(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    return scenario_latency("latency-50ms", LATENCY, settings, manifests, servers)


SWEEP_NAME = "sweep-50ms"


@dataclasses.dataclass
class SweepRuns:
    """The sweep's own runs: every point but c=CONCURRENCY, the 50 ms scenario's own run."""

    in_turn: dict[int, tuple[Measurement, Measurement]]  # concurrency -> (bare, apply)
    at_once: dict[int, dict[str, Any]]  # concurrency -> its record, where judged at once


def sweep_runs(settings: Settings, manifests: Manifests, servers: Servers) -> SweepRuns:
    """Bare and apply taken in turn at each point of the sweep; then, at each point the
    client's CPU may bound (``runs.judged_at_once``), at once."""
    runs = SweepRuns({}, {})
    for concurrency in settings.sweep:
        if concurrency == CONCURRENCY:
            continue
        count = secrets_for(settings, concurrency, LATENCY)
        setup = Setup(latency=LATENCY)
        runs.in_turn[concurrency] = bare_and_apply(
            servers,
            SWEEP_NAME,
            manifests,
            count,
            concurrency,
            setup,
            repeats_for(settings, concurrency, LATENCY),
        )
        if judged_at_once(concurrency, LATENCY):
            runs.at_once[concurrency] = rates_at_once(
                SWEEP_NAME, servers, manifests, count, concurrency, setup, repeats_at_once(settings)
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
        if concurrency in runs.in_turn:
            bare, apply = runs.in_turn[concurrency]
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
                "at_once": runs.at_once.get(concurrency),  # None: judged in turn
            }
        )
    scenario.extra["points"] = points
    return scenario


def scenario_rate_limited(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    """Apply against an emulator that allows 200 requests/s (burst 200), with and without
    Retry-After."""
    scenario = Scenario(
        "rate-limited",
        f"emulator rate limit {RATE_LIMIT}/s, burst {RATE_LIMIT}; apply at concurrency "
        f"{CONCURRENCY} with --max-rps 0 (unknown limit) and --max-rps 250, 429s with "
        "Retry-After; then --max-rps 0, 429s without",
    )
    n = settings.rate_limited_secrets
    runs = []
    for max_rps, retry_after in RATE_LIMITED_RUNS:
        m = run_apply(
            servers,
            scenario.name,
            manifests,
            n,
            CONCURRENCY,
            Setup(rate_limit=RATE_LIMIT, retry_after=retry_after),
            Client(malloc_tuned=False),
            max_rps=max_rps,
        )
        progress(m)
        scenario.measurements.append(m)
        runs.append(
            {
                "max_rps": max_rps,
                "retry_after": retry_after,
                "goodput": m.rate,
                "goodput_of_limit": m.rate / RATE_LIMIT,
                "share_429": m.share_429,
                "all_succeeded": m.all_succeeded,
            }
        )
    scenario.extra["limit"] = RATE_LIMIT
    scenario.extra["runs"] = runs
    return scenario


def scenario_rate_control(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    """Apply at its default rate against random 429s: goodput against the run without them."""
    n = settings.rate_control_secrets
    shares = sorted({share for share, _ in RATE_CONTROL_RUNS if share})
    scenario = Scenario(
        "rate-control",
        f"emulator latency {RATE_CONTROL_LATENCY * 1000:g} ms, a random share of requests "
        f"({', '.join(f'{s:.0%}' for s in shares)}) answered 429 with Retry-After: 1, then "
        f"without; apply of {n:,} secrets at concurrency {RATE_CONTROL_CONCURRENCY}, "
        "default --max-rps",
    )
    baseline: Measurement | None = None
    runs = []
    for share, retry_after in RATE_CONTROL_RUNS:
        m = run_apply(
            servers,
            scenario.name,
            manifests,
            n,
            RATE_CONTROL_CONCURRENCY,
            Setup(latency=RATE_CONTROL_LATENCY, share_429=share, retry_after=retry_after),
            Client(malloc_tuned=False),
            max_rps=None,
        )
        progress(m)
        scenario.measurements.append(m)
        if share == 0:
            baseline = m
        runs.append(
            {
                "share_429_asked": share,
                "retry_after": retry_after,
                "goodput": m.rate,
                "goodput_vs_no_429": ratio(m, baseline),
                "share_429": m.share_429,
                "all_succeeded": m.all_succeeded,
            }
        )
    scenario.extra["runs"] = runs
    return scenario


ScenarioJob = Callable[[Settings, Manifests, Servers], Scenario]
# In the order a measured run takes them; the sweep's own runs come after the 50 ms scenario.
SCENARIOS: dict[str, ScenarioJob] = {
    "latency-0ms": scenario_0ms,
    "latency-50ms": scenario_50ms,
    "cpu-per-secret": cpu.scenario_cpu,
    "tls": tls.scenario_tls,
    "rate-limited": scenario_rate_limited,
    "rate-control": scenario_rate_control,
    "many-accounts": accounts.scenario_many_accounts,
    "memory": scale.scenario_memory,
}


def run_all(settings: Settings, folder: Path) -> dict[str, Scenario]:
    manifests = Manifests(folder)
    jobs = {
        name: job for name, job in SCENARIOS.items() if name in settings.only or not settings.only
    }
    if not settings.memory_rows:
        jobs.pop("memory", None)
    sweep = SweepRuns({}, {})
    with Servers(shared=settings.smoke) as servers:
        if settings.smoke:
            done, sweep = run_at_once(jobs, settings, manifests, servers)
        else:  # one run at a time, in this order
            done = {}
            for name, job in jobs.items():
                done[name] = job(settings, manifests, servers)
                if name == "latency-50ms":
                    sweep = sweep_runs(settings, manifests, servers)
    scenarios: dict[str, Scenario] = {}
    for name, scenario in done.items():
        scenarios[name] = scenario
        if name == "latency-50ms":
            scenarios[SWEEP_NAME] = scenario_sweep(settings, sweep, scenario)
    return scenarios


def run_at_once(
    jobs: dict[str, ScenarioJob], settings: Settings, manifests: Manifests, servers: Servers
) -> tuple[dict[str, Scenario], SweepRuns]:
    """Every scenario in a thread of its own (a smoke run): each has emulators of its own."""
    with ThreadPoolExecutor(max_workers=SMOKE_THREADS, thread_name_prefix="scenario") as pool:
        futures: dict[str, Future[Scenario]] = {
            name: pool.submit(job, settings, manifests, servers) for name, job in jobs.items()
        }
        sweep = None
        if "latency-50ms" in jobs:
            sweep = pool.submit(sweep_runs, settings, manifests, servers)
        try:
            done = {name: future.result() for name, future in futures.items()}
            return done, SweepRuns({}, {}) if sweep is None else sweep.result()
        except BaseException:  # a bug, or this harness being stopped: stop the other threads
            servers.close()  # their next run fails at once
            stop_clients()  # and so do the runs going on
            raise
