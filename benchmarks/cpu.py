"""CPU per secret: apply against the bare loop on the same event loop, start-up cancelled out.

On each event loop of ``settings.loops`` (asyncio, and uvloop when it is installed), the bare
loop and apply each create a small and a large number of secrets (10,000 and 40,000) at 0 ms,
concurrency 64, each run against a fresh emulator, every process with ``MALLOC_ENV``; a
client's CPU per secret is ``(cpu(large) - cpu(small)) / (large - small)``, its process CPU
time (user + system, from ``os.wait4``) over the extra secrets, so that interpreter start-up,
imports, the listing of the empty account and the session cancel out. The four runs of a
repeat are taken in turn, small then large, the client that goes first changing from repeat to
repeat (bare first, then apply first), so that neither always follows the other;
``settings.cpu_repeats`` repeats (see ``runs.CPU_REPEATS``). The median of each client's
repeats counts, and the ratio is apply's over bare's on that loop.

How sure the ratio is. A run's CPU time on this 2-core machine moves by up to a tenth from run
to run, the same program's, and the ratio's goal is a tenth: so beside the ratio comes a 90%
interval, the 5th and 95th percentiles of the ratio of medians over ``BOOTSTRAP`` resamplings
of each client's repeats (a seeded bootstrap: the same runs give the same interval).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict

from clients import Client, Manifests, run_apply, run_bare
from measurements import Measurement, Scenario, Settings, ratio
from processes import Servers, Setup
from runs import CONCURRENCY, median_run, progress

NAME = "cpu-per-secret"
CPU_SECRETS = (10_000, 40_000)
QUICK_CPU_SECRETS = (2_500, 10_000)
SMOKE_CPU_SECRETS = (10, 40)
CLIENTS = ("bare", "apply")
BOOTSTRAP = 2000  # resamplings of the repeats, for the ratio's interval


def scenario_cpu(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    small, large = settings.cpu_secrets
    scenario = Scenario(
        NAME,
        f"CPU per secret, ({large:,} secrets less {small:,}) / {large - small:,}, of bare and "
        f"apply at 0 ms, concurrency {CONCURRENCY}, on each event loop "
        f"({', '.join(settings.loops)}); MALLOC_ENV on both; "
        f"median of {settings.cpu_repeats}, first client alternating",
    )
    loops = {}
    every_run: dict[str, list[dict[str, object]]] = {}  # not only the medians in measurements
    for loop in settings.loops:
        how = Client(loop=loop)
        runs: defaultdict[tuple[str, int], list[Measurement]] = defaultdict(list)
        for repeat in range(settings.cpu_repeats):
            for count in (small, large):
                for client in CLIENTS if repeat % 2 == 0 else CLIENTS[::-1]:
                    if client == "bare":
                        m = run_bare(servers, NAME, count, CONCURRENCY, Setup(), how)
                    else:
                        m = run_apply(servers, NAME, manifests, count, CONCURRENCY, Setup(), how)
                    progress(m)
                    runs[client, count].append(m)
        every_run[loop] = [m.to_dict() for done in runs.values() for m in done]
        bare, apply = median_run(runs["bare", large]), median_run(runs["apply", large])
        for m in (bare, apply):
            m.ratio_vs_bare = ratio(m, bare)
        scenario.measurements += [bare, apply]
        loops[loop] = per_secret(runs, small, large)
        loops[loop]["throughput_vs_bare"] = apply.ratio_vs_bare
        for client, m in (("bare", bare), ("apply", apply)):
            us = loops[loop][f"{client}_us_per_secret"]
            if us is not None:
                m.note = (m.note + "; " if m.note else "") + f"CPU {us:.1f} us/secret"
    scenario.extra["small"], scenario.extra["large"] = small, large
    scenario.extra["loops"] = loops
    scenario.extra["runs"] = every_run
    return scenario


def per_secret(
    runs: dict[tuple[str, int], list[Measurement]], small: int, large: int
) -> dict[str, object]:
    """Each client's CPU per secret (us) in each repeat, their medians, and apply / bare."""
    record: dict[str, object] = {}
    medians: dict[str, float | None] = {}
    measured: dict[str, list[float]] = {}  # each client's repeats that gave a figure
    for client in CLIENTS:
        pairs = zip(runs[client, small], runs[client, large], strict=True)
        values = [cpu_per_secret(a, b) for a, b in pairs]
        measured[client] = [v for v in values if v is not None]
        record[f"{client}_us_per_secret_repeats"] = values
        complete = len(measured[client]) == len(values)
        medians[client] = statistics.median(measured[client]) if complete else None
        record[f"{client}_us_per_secret"] = medians[client]
        failed = [m.error for m in runs[client, small] + runs[client, large] if m.error]
        record[f"{client}_errors"] = failed
    bare_us, apply_us = medians["bare"], medians["apply"]
    record["ratio"] = apply_us / bare_us if apply_us is not None and bare_us else None
    record["ratio_interval"] = (
        None if record["ratio"] is None else ratio_interval(measured["bare"], measured["apply"])
    )
    return record


def ratio_interval(bare: list[float], apply: list[float]) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of median(apply) / median(bare) over resamplings of each
    client's repeats; None with fewer than 3 repeats of either."""
    if len(bare) < 3 or len(apply) < 3:
        return None
    draw = random.Random(0).choices
    ratios = sorted(
        statistics.median(draw(apply, k=len(apply))) / statistics.median(draw(bare, k=len(bare)))
        for _ in range(BOOTSTRAP)
    )
    return ratios[BOOTSTRAP * 5 // 100], ratios[BOOTSTRAP * 95 // 100 - 1]


def cpu_per_secret(small: Measurement, large: Measurement) -> float | None:
    """Microseconds of CPU per extra secret from the small run to the large one."""
    if small.error or large.error or not large.all_succeeded or not small.all_succeeded:
        return None
    if small.client_cpu_seconds is None or large.client_cpu_seconds is None:
        return None
    extra = large.secrets - small.secrets
    return (large.client_cpu_seconds - small.client_cpu_seconds) / extra * 1e6
