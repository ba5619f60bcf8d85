"""Two clients run at once on one core, each against an emulator of its own on another: the
way this harness compares bare and apply where the machine's speed would swamp a comparison of
runs taken in turn.

Why. The speed of this machine's cores moves by up to 2x within a second, each core on its own:
a fixed Python loop timed every 35 ms took 24 to 52 ms, and the two cores' timings did not move
together (correlation 0.02 over half seconds). Runs taken one after the other meet different
speeds: the same run's rate or CPU per secret spread over 1.5x to 2x, and the ratio of two
such medians moved by 0.1 to 0.2 between runs of the same code, more than the goals' margins.
Run at once on one core, the two clients share whatever speed the core has, and it cancels in
their ratio. Each then has half a core: both wait for it as much, and find as many answers at
each wait.

:func:`pins` picks the cores (the clients on the first this process may use, the emulators on
the second); :func:`at_once` runs a pair, started together at a barrier once both emulators
are up, and gives each run its rate over the stretch when both were creating
(``timeline.overlap_rates``); :func:`quotients`, :func:`median_of` and
:func:`median_interval` sum repeats up.
Where the harness cannot pin (fewer than two CPUs usable, or no ``sched_setaffinity``: not
Linux), the two run at once wherever the system puts them, and the details say so.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from clients import Client, Manifests, run_apply, run_bare
from measurements import Measurement
from processes import Servers, Setup
from runs import progress
from timeline import Timeline, overlap_rates

BOOTSTRAP = 2000  # resamplings of the repeats, for the median's interval

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


def pinned_as(servers: Servers, how: Client) -> tuple[Client, dict[str, int] | None]:
    """``how`` on the cores of :func:`pins`, and where that is (for ``extra["pinned"]``); as
    it is where the harness cannot pin, or in a smoke run, whose emulators are shared."""
    pinned = None if servers.shared else pins()
    if pinned is None:
        return how, None
    where = {"clients": min(pinned[0]), "emulators": min(pinned[1])}
    return replace(how, cpus=pinned[0], emulator_cpus=pinned[1]), where


def placement(pinned: dict[str, int] | None) -> str:
    """Where the runs went, as a scenario records it (``extra["pinned"]``)."""
    if pinned is None:
        return "not pinned"
    return f"clients on CPU {pinned['clients']}, emulators on CPU {pinned['emulators']}"


def at_once(
    scenario: str,
    clients: tuple[str, str],
    servers: Servers,
    manifests: Manifests,
    count: int,
    concurrency: int,
    setup: Setup,
    how: Client,
) -> list[Measurement]:
    """A run of each client of ``clients`` ("bare", "apply", or "bare 2": bare again), each
    with ``count`` secrets against an emulator of its own, started together (once both
    emulators are up), as ``how`` says; each with its ``overlap_rate``."""
    together = threading.Barrier(len(clients))
    timeline = Timeline(how.emulator_cpus)
    paired = replace(how, together=together, timeline=timeline)

    def run(client: str) -> Measurement:
        try:
            if client == "apply":
                return run_apply(servers, scenario, manifests, count, concurrency, setup, paired)
            m = run_bare(servers, scenario, count, concurrency, setup, paired)
            m.client = client
            return m
        finally:
            together.abort()  # past the barrier by now, or failed before it: free the other

    try:
        with ThreadPoolExecutor(len(clients), thread_name_prefix="at-once") as pool:
            done = list(pool.map(run, clients))
    finally:
        timeline.close()
    if not any(m.error for m in done):
        rates = overlap_rates([m.created for m in done])
        for index, m in enumerate(done):
            m.overlap_rate = None if rates is None else rates[index]
    return done


def rates_at_once(
    scenario: str,
    servers: Servers,
    manifests: Manifests,
    count: int,
    concurrency: int,
    setup: Setup,
    repeats: tuple[int, int],
    how: Client | None = None,
) -> dict[str, Any]:
    """Apply's rate over bare's, both run at once on one core (:func:`at_once`), in each of
    ``repeats[0]`` repeats, with their median and its 90% interval; then bare against bare,
    ``repeats[1]`` times (the method's own noise: 1.00 would be exact)."""
    how, where = pinned_as(servers, how or Client())
    record: dict[str, Any] = {"secrets": count, "pinned": where}
    ratios: list[float | None] = []
    same: list[float | None] = []
    record["bare_rates"], record["apply_rates"], record["errors"] = [], [], []
    cpus: dict[str, list[float | None]] = {"bare": [], "apply": []}  # process CPU, start-up in
    for repeat in range(sum(repeats)):
        pair = ("bare", "apply") if repeat < repeats[0] else ("bare", "bare 2")
        bare, other = at_once(scenario, pair, servers, manifests, count, concurrency, setup, how)
        for m in (bare, other):
            progress(m)
            record["errors"] += [f"{m.client}: {m.error}"] if m.error else []
        if repeat < repeats[0]:
            record["bare_rates"].append(bare.overlap_rate)
            record["apply_rates"].append(other.overlap_rate)
            cpus["bare"].append(bare.client_cpu_seconds)
            cpus["apply"].append(other.client_cpu_seconds)
        (ratios if repeat < repeats[0] else same).append(overlap_ratio(other, bare))
    record["cpu_ratios"] = quotients(cpus["apply"], cpus["bare"])  # apply's over bare's
    record["ratio_repeats"], record["ratio"] = ratios, median_of(ratios)
    record["ratio_interval"] = median_interval(ratios)
    record["same_ratio_repeats"], record["same_ratio"] = same, median_of(same)
    return record


def overlap_ratio(top: Measurement, bottom: Measurement) -> float | None:
    """``top``'s rate over ``bottom``'s, both over the stretch when both were creating."""
    if top.overlap_rate is None or not bottom.overlap_rate or not top.all_succeeded:
        return None
    return top.overlap_rate / bottom.overlap_rate


def quotients(tops: list[float | None], bottoms: list[float | None]) -> list[float | None]:
    """Each of ``tops`` over the one of ``bottoms`` beside it (None where either is)."""
    return [
        None if top is None or not bottom else top / bottom
        for top, bottom in zip(tops, bottoms, strict=True)
    ]


def median_of(values: list[float | None]) -> float | None:
    """The median, or None when a value is missing (a run failed) or there are none."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured and len(measured) == len(values) else None


def median_interval(values: list[float | None]) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of the median of ``values`` over seeded resamplings of
    them; None with fewer than 3, or one missing."""
    measured = [v for v in values if v is not None]
    if len(measured) < 3 or len(measured) < len(values):
        return None
    draw = random.Random(0).choices
    medians = sorted(statistics.median(draw(measured, k=len(measured))) for _ in range(BOOTSTRAP))
    return medians[BOOTSTRAP * 5 // 100], medians[BOOTSTRAP * 95 // 100 - 1]
