"""CPU per secret: apply against the bare loop on the same event loop, both at once, start-up
cancelled out.

On each event loop of ``settings.loops`` (asyncio, and uvloop when it is installed), a repeat
runs bare and apply *at the same time*, each against a fresh emulator of its own, at 0 ms,
concurrency 64, every process with ``MALLOC_ENV``: once with a small and once with a large
number of secrets each (10,000 and 40,000). A client's CPU per secret is
``(cpu(large) - cpu(small)) / (large - small)``, its process CPU time (user + system, from
``os.wait4``) over the extra secrets, so that interpreter start-up, imports, the listing of the
empty account and the session cancel out. The repeat's ratio is apply's CPU per secret over
bare's; the median of ``settings.cpu_repeats`` repeats (see ``runs.CPU_REPEATS``) counts,
with a 90% interval: the 5th and 95th percentiles of that median over
``together.BOOTSTRAP`` resamplings of the repeats (seeded: the same runs give the same interval).

Why at once, on one core: see ``together.py``. What is left is the method's own noise,
measured in every run: bare against bare at once (``SAME_REPEATS`` repeats), whose ratio should
be 1.00.
"""

from __future__ import annotations

from collections import defaultdict

from clients import Client, Manifests
from measurements import Measurement, Scenario, Settings, ratio
from processes import Servers, Setup
from runs import CONCURRENCY, median_run, progress
from together import (
    at_once,
    median_interval,
    median_of,
    overlap_ratio,
    pinned_as,
    placement,
    quotients,
)

NAME = "cpu-per-secret"
CPU_SECRETS = (10_000, 40_000)
QUICK_CPU_SECRETS = (2_500, 10_000)
SMOKE_CPU_SECRETS = (10, 40)
SAME_REPEATS = 3  # repeats of bare against bare at once: the method's own noise


def scenario_cpu(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    small, large = settings.cpu_secrets
    where = pinned_as(servers, Client())[1]
    scenario = Scenario(
        NAME,
        f"CPU per secret, ({large:,} secrets less {small:,}) / {large - small:,}, of bare and "
        f"apply run at once ({placement(where)}), at 0 ms, concurrency {CONCURRENCY}, on each "
        f"event loop ({', '.join(settings.loops)}); MALLOC_ENV on both; median of "
        f"{settings.cpu_repeats} repeats of apply/bare",
    )
    same_repeats = min(SAME_REPEATS, settings.cpu_repeats)
    loops = {}
    every_run: dict[str, list[dict[str, object]]] = {}  # not only the medians in measurements
    for loop in settings.loops:
        how = pinned_as(servers, Client(loop=loop))[0]
        runs: defaultdict[tuple[str, int], list[Measurement]] = defaultdict(list)
        for repeat in range(settings.cpu_repeats + same_repeats):
            pair = ("bare", "apply") if repeat < settings.cpu_repeats else ("bare", "bare 2")
            for count in (small, large):
                done = at_once(NAME, pair, servers, manifests, count, CONCURRENCY, Setup(), how)
                for client, m in zip(pair, done, strict=True):
                    progress(m)
                    runs[client, count].append(m)
        every_run[loop] = [m.to_dict() for done in runs.values() for m in done]
        bare = median_run(runs["bare", large][: settings.cpu_repeats])
        apply = median_run(runs["apply", large])
        for m in (bare, apply):
            m.ratio_vs_bare = ratio(m, bare)
            m.note = (m.note + "; " if m.note else "") + "run at once with the other client"
        scenario.measurements += [bare, apply]
        loops[loop] = per_secret(runs, small, large, settings.cpu_repeats)
        # their rates over the stretch when both were creating (apply's tail, alone, left out)
        # bare's list goes on with its runs against "bare 2": zip stops at apply's last
        pairs = zip(runs["apply", large], runs["bare", large], strict=False)
        overlap = [overlap_ratio(apply_run, bare_run) for apply_run, bare_run in pairs]
        loops[loop]["throughput_at_once"] = median_of(overlap)
        for client, m in (("bare", bare), ("apply", apply)):
            us = loops[loop][f"{client}_us_per_secret"]
            if us is not None:
                m.note += f"; CPU {us:.1f} us/secret"
    scenario.extra["small"], scenario.extra["large"] = small, large
    scenario.extra["pinned"] = where
    scenario.extra["loops"] = loops
    scenario.extra["runs"] = every_run
    return scenario


def per_secret(
    runs: dict[tuple[str, int], list[Measurement]], small: int, large: int, repeats: int
) -> dict[str, object]:
    """Each client's CPU per secret (us) in each repeat and their medians; apply / bare in
    each repeat, their median and its interval; the same for bare against bare (the runs of
    "bare" past ``repeats`` are those against "bare 2")."""
    record: dict[str, object] = {}
    values: dict[str, list[float | None]] = {}
    for client in ("bare", "apply", "bare 2"):
        pairs = zip(runs[client, small], runs[client, large], strict=True)
        values[client] = [cpu_per_secret(a, b) for a, b in pairs]
        failed = [m.error for m in runs[client, small] + runs[client, large] if m.error]
        record[f"{client.replace(' ', '_')}_errors"] = failed
    bare, same = values["bare"][:repeats], values["bare"][repeats:]
    for client, measured in (("bare", bare), ("apply", values["apply"])):
        record[f"{client}_us_per_secret_repeats"] = measured
        record[f"{client}_us_per_secret"] = median_of(measured)
    record["ratio_repeats"] = ratios = quotients(values["apply"], bare)
    record["ratio"] = median_of(ratios)
    record["ratio_interval"] = None if record["ratio"] is None else median_interval(ratios)
    record["same_ratio_repeats"] = same_ratios = quotients(values["bare 2"], same)
    record["same_ratio"] = median_of(same_ratios)
    return record


def cpu_per_secret(small: Measurement, large: Measurement) -> float | None:
    """Microseconds of CPU per extra secret from the small run to the large one."""
    if small.error or large.error or not large.all_succeeded or not small.all_succeeded:
        return None
    if small.client_cpu_seconds is None or large.client_cpu_seconds is None:
        return None
    extra = large.secrets - small.secrets
    return (large.client_cpu_seconds - small.client_cpu_seconds) / extra * 1e6
