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
with a 90% interval: the 5th and 95th percentiles of that median over ``BOOTSTRAP``
resamplings of the repeats (seeded: the same runs give the same interval).

Why at once, on one core. The speed of this machine's cores moves by up to 2x within a second,
each core on its own: a fixed Python loop timed every 35 ms took 24 to 52 ms, and the two
cores' timings did not move together (correlation 0.02 over half seconds). Runs taken one
after the other meet different speeds: their CPU per secret spread over 1.5x to 2x for the
same work, and a ratio of two such medians moved by 0.1 to 0.2 between runs of the same code,
more than the goal's margin. So the two clients run at once, both pinned to one core, the two
emulators to another (see :func:`pins`): the core's speed, whatever it does, is shared by the
two clients, and cancels in their ratio. What is left is the
method's own noise, measured in every run: bare against bare at once (``SAME_REPEATS``
repeats), whose ratio should be 1.00. Each client then has half a core: both wait for their
core as much, and find as many answers at each wait.

Where the harness cannot pin (fewer than two CPUs usable, or no ``sched_setaffinity``: not
Linux), the two run at once wherever the system puts them, and the details say so.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from clients import Client, Manifests, run_apply, run_bare
from measurements import Measurement, Scenario, Settings, ratio
from processes import Servers, Setup
from runs import CONCURRENCY, median_run, progress

NAME = "cpu-per-secret"
CPU_SECRETS = (10_000, 40_000)
QUICK_CPU_SECRETS = (2_500, 10_000)
SMOKE_CPU_SECRETS = (10, 40)
BOOTSTRAP = 2000  # resamplings of the repeats, for the ratio's interval
SAME_REPEATS = 3  # repeats of bare against bare at once: the method's own noise

Pins = tuple[frozenset[int], frozenset[int]] | None  # (the clients' CPU, the emulators')


def pins() -> Pins:
    """The CPU the clients run on and the one the emulators run on: the first two this
    process may use; None where it cannot pin."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None
    return frozenset(usable[:1]), frozenset(usable[1:2])


def placement(pinned: dict[str, int] | None) -> str:
    """Where the runs went, as the scenario records it (``extra["pinned"]``)."""
    if pinned is None:
        return "not pinned"
    return f"clients on CPU {pinned['clients']}, emulators on CPU {pinned['emulators']}"


def scenario_cpu(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    small, large = settings.cpu_secrets
    pinned = None if servers.shared else pins()  # a smoke run's emulators are shared
    where = None if pinned is None else {"clients": min(pinned[0]), "emulators": min(pinned[1])}
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
        how = Client(loop=loop)
        if pinned:
            how = replace(how, cpus=pinned[0], emulator_cpus=pinned[1])
        runs: defaultdict[tuple[str, int], list[Measurement]] = defaultdict(list)
        for repeat in range(settings.cpu_repeats + same_repeats):
            pair = ("bare", "apply") if repeat < settings.cpu_repeats else ("bare", "bare 2")
            for count in (small, large):
                done = at_once(pair, servers, manifests, count, how)
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
        loops[loop]["throughput_vs_bare"] = apply.ratio_vs_bare
        for client, m in (("bare", bare), ("apply", apply)):
            us = loops[loop][f"{client}_us_per_secret"]
            if us is not None:
                m.note += f"; CPU {us:.1f} us/secret"
    scenario.extra["small"], scenario.extra["large"] = small, large
    scenario.extra["pinned"] = where
    scenario.extra["loops"] = loops
    scenario.extra["runs"] = every_run
    return scenario


def at_once(
    clients: tuple[str, str], servers: Servers, manifests: Manifests, count: int, how: Client
) -> list[Measurement]:
    """A run of each client of ``clients`` ("bare", "apply", or "bare 2": bare again), each
    with ``count`` secrets against an emulator of its own, started together (once both
    emulators are up), as ``how`` says."""
    together = threading.Barrier(len(clients))
    paired = replace(how, together=together)

    def run(client: str) -> Measurement:
        try:
            if client == "apply":
                return run_apply(servers, NAME, manifests, count, CONCURRENCY, Setup(), paired)
            m = run_bare(servers, NAME, count, CONCURRENCY, Setup(), paired)
            m.client = client
            return m
        finally:
            together.abort()  # past the barrier by now, or failed before it: free the other

    with ThreadPoolExecutor(len(clients), thread_name_prefix="cpu") as pool:
        return list(pool.map(run, clients))


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


def median_of(values: list[float | None]) -> float | None:
    """The median, or None when a value is missing (a run failed) or there are none."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured and len(measured) == len(values) else None


def quotients(tops: list[float | None], bottoms: list[float | None]) -> list[float | None]:
    """Each of ``tops`` over the one of ``bottoms`` beside it (None where either is)."""
    return [
        None if top is None or not bottom else top / bottom
        for top, bottom in zip(tops, bottoms, strict=True)
    ]


def median_interval(values: list[float | None]) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of the median of ``values`` over seeded resamplings of
    them; None with fewer than 3, or one missing."""
    measured = [v for v in values if v is not None]
    if len(measured) < 3 or len(measured) < len(values):
        return None
    draw = random.Random(0).choices
    medians = sorted(statistics.median(draw(measured, k=len(measured))) for _ in range(BOOTSTRAP))
    return medians[BOOTSTRAP * 5 // 100], medians[BOOTSTRAP * 95 // 100 - 1]


def cpu_per_secret(small: Measurement, large: Measurement) -> float | None:
    """Microseconds of CPU per extra secret from the small run to the large one."""
    if small.error or large.error or not large.all_succeeded or not small.all_succeeded:
        return None
    if small.client_cpu_seconds is None or large.client_cpu_seconds is None:
        return None
    extra = large.secrets - small.secrets
    return (large.client_cpu_seconds - small.client_cpu_seconds) / extra * 1e6
