"""What every scenario shares: the common settings, the progress line, and pairs of bare and
apply runs taken in turn, of which the median counts."""

from __future__ import annotations

import sys

from clients import Client, Manifests, run_apply, run_bare
from measurements import Measurement, Settings, since_start
from processes import Servers, Setup

CONCURRENCY = 64
LATENCY = 0.050  # seconds, the emulator's --latency in the 50 ms scenarios
REPEATS = 3  # runs of bare and of apply, interleaved, where one run lasts only seconds
# The CPU-bound comparisons move by a tenth from repeat to repeat on a 2-core machine, where
# client and emulator share the cores: their medians take more repeats. CPU per secret, whose
# goal is itself a tenth, takes more still (the median of 9 is about three quarters as spread
# as the median of 5).
CPU_BOUND_REPEATS = 5
CPU_REPEATS = 9
SHORT_RUN_RATE = 2500.0  # requests/s of ceiling above which a run of N lasts only seconds
# requests/s of ceiling at or above which the client's CPU may bound the run, not the latency:
# c=256 and c=1,024 at 50 ms (ceilings 5,120 and 20,480/s). On 2 cores bare does 3,500 to 4,600/s
# at c=256 (its client 66% busy when the machine is slow: a slow second makes it CPU-bound) and
# 3,500 to 6,700/s at c=1,024. Taken in turn, their ratio moves with the machine's speed as the
# 0 ms one does (c=256: 0.99x, 0.92x and 0.91x in three full runs of one afternoon), so they are
# judged at once, as 0 ms is (see ``judged_at_once``). At once, both clients share a core and
# are bound by its CPU: c=256 gave apply/bare 0.956x over 5 repeats (0.946-0.972), bare/bare
# 0.976-1.013x; c=1,024, 0.99-1.03x.
CPU_BOUND_RATE = 5_000.0
LONG_RUN_SECONDS = 20.0  # a latency-bound run is cut to this many seconds at its ceiling


def progress(m: Measurement) -> None:
    m.ended_at = since_start()
    if m.error:
        line = f"FAILED: {m.error}"
    else:
        line = f"{m.succeeded}/{m.secrets} in {m.work_seconds:.2f}s = {m.rate:,.0f}/s"
    how = f"c={m.concurrency}"
    if m.client != "sequential":
        how += f" {m.loop}" + (" tls" if m.tls else "") + (" dry-run" if m.dry_run else "")
    print(  # one write, so that lines from the threads of a smoke run do not interleave
        f"  {m.ended_at:6.1f}s [{m.scenario}] {m.client} {how}: {line}\n",
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
    setup: Setup,
    repeats: int,
    *,
    bare_how: Client | None = None,
    apply_how: Client | None = None,
    max_rps: float | None = 0.0,
) -> tuple[Measurement, Measurement]:
    """Bare then apply, ``repeats`` times over, interleaved; each keeps its median run.

    Runs that last only seconds are at the mercy of anything else on the machine; the median
    of a few, taken turn about, is steadier than one.
    """
    bares: list[Measurement] = []
    applies: list[Measurement] = []
    for _ in range(repeats):
        bares.append(run_bare(servers, scenario, n, concurrency, setup, bare_how or Client()))
        progress(bares[-1])
        applies.append(
            run_apply(
                servers,
                scenario,
                manifests,
                n,
                concurrency,
                setup,
                apply_how or Client(),
                max_rps=max_rps,
            )
        )
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
        chosen.repeat_runs = [
            {
                "rate": m.rate,
                "request_rate": m.request_rate,
                "work_seconds": m.work_seconds,
                "wall_seconds": m.wall_seconds,
                "client_cpu_seconds": m.client_cpu_seconds,
                "server_cpu_seconds": m.server_cpu_seconds,
                "peak_rss_kib": m.peak_rss_kib,
                "requests": m.requests,
                "connections": m.connections,
            }
            for m in runs
        ]
        rates = ", ".join(f"{rate:,.0f}" for rate in chosen.repeat_rates)
        chosen.note = (chosen.note + "; " if chosen.note else "") + f"median of {rates}/s"
    return chosen


def secrets_for(settings: Settings, concurrency: int, latency: float) -> int:
    """``settings.secrets``, or fewer for a run bound by latency: about ``LONG_RUN_SECONDS`` at
    its ceiling of concurrency / latency (at 50 ms, only c=16 is cut: to 6,400)."""
    if latency == 0:
        return settings.secrets
    return min(settings.secrets, int(concurrency / latency * LONG_RUN_SECONDS))


def repeats_for(settings: Settings, concurrency: int, latency: float) -> int:
    """Repeats of bare and apply taken in turn: the median of a few where a run lasts only
    seconds, else one."""
    short = latency == 0 or concurrency / latency >= SHORT_RUN_RATE
    return settings.repeats if short else 1


def judged_at_once(concurrency: int, latency: float) -> bool:
    """Whether the client's CPU may bound the rate (at 0 ms, or a ceiling of at least
    ``CPU_BOUND_RATE``): if so, apply is judged against bare run at once on one core
    (``together.rates_at_once``), so that the machine's speed, which moves by up to 2x within
    a second here, is the same for both; the runs taken in turn are shown beside it."""
    return latency == 0 or concurrency / latency >= CPU_BOUND_RATE
