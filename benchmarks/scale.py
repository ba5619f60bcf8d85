"""Memory, and how cost grows with the manifest: apply over CSV manifests of growing size.

apply at 0 ms, concurrency 64, ``--max-rps 0``, a JSONL report, on the default loop without
``MALLOC_ENV`` (what users run), over CSV manifests of 10,000, 20,000, 100,000, 200,000 and
1,000,000 rows, taken in turn; runs of up to 20,000 rows last a few seconds and are repeated
(the run of median rate counts). Then ``apply --dry-run`` of the largest manifest (list, plan,
print the plan, write nothing). Then the linear chain (10,000, 100,000, 1,000,000 rows) again,
each size as bare and apply at once on one core (``together.rates_at_once``, both with
``MALLOC_ENV``), ``settings.repeats`` times up to ``REPEATED_AT_ONCE_UP_TO`` rows and once
above (a run of 1,000,000 at once lasts minutes: its rate is read 4,000 times over).

- **Growth**: (peak RSS at 10x rows - peak RSS at x rows) / 9x, in bytes per extra row, for
  every such pair measured (10k -> 100k, 20k -> 200k, 100k -> 1M).
- **Linear cost**: over a chain x, 10x, 100x (10k, 100k, 1M): apply's rate over bare's, both
  over the stretch when both were creating, at each size (the median of the repeats); the
  rates are flat when min / max >= 0.90. Bare does the same work for every secret whatever
  the size, so the ratio is apply's rate with the machine's speed taken out: the rates of runs
  taken in turn moved by 1.8x with it (the same 1,000,000-row run did 7,806 and 12,233/s).
  What precedes apply's first create (listing, the manifest's first pass) is outside that
  stretch: about 1.5 us a row, against about 100 of sending. Memory per row is flat when the
  growth of the last step (100k -> 1M) is at most 1.10 times that of the step before
  (10k -> 100k).
"""

from __future__ import annotations

from typing import Any

from clients import Client, Manifests, run_apply
from measurements import Measurement, Scenario, Settings
from processes import Servers, Setup
from runs import CONCURRENCY, median_run, progress
from together import rates_at_once

NAME = "memory"
MEMORY_ROWS = (10_000, 20_000, 100_000, 200_000, 1_000_000)
SMOKE_MEMORY_ROWS = (1, 10, 100)
REPEATED_UP_TO = 20_000  # rows: a run this size lasts a few seconds, so it is repeated
REPEATED_AT_ONCE_UP_TO = 100_000  # rows: the chain at once, past this, is run once


def scenario_memory(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    rows = sorted(settings.memory_rows)
    scenario = Scenario(
        NAME,
        f"peak RSS and rate of apply for CSV manifests of {', '.join(f'{r:,}' for r in rows)} "
        f"rows (concurrency {CONCURRENCY}, --max-rps 0, latency 0 ms, JSONL report), and of "
        f"apply --dry-run at {rows[-1]:,} rows",
    )
    own = Manifests(manifests.folder / NAME)  # its own: dropped after use, shared by no one
    own.folder.mkdir(exist_ok=True)
    how = Client(malloc_tuned=False)
    chain = [rows[0], rows[0] * 10, rows[0] * 100]
    if not set(chain) <= set(rows):
        chain = []
    repeats = {count: settings.repeats if count <= REPEATED_UP_TO else 1 for count in rows}
    runs: dict[int, list[Measurement]] = {count: [] for count in rows}
    for repeat in range(max(repeats.values())):
        for count in rows:
            if repeat < repeats[count]:
                runs[count].append(run_apply(servers, NAME, own, count, CONCURRENCY, Setup(), how))
                progress(runs[count][-1])
            if repeat == repeats[count] - 1 and count not in (rows[-1], *chain):
                own.drop(count)  # its last run: the manifest is no longer needed
    scenario.measurements += [median_run(runs[count]) for count in rows]
    dry = run_apply(servers, NAME, own, rows[-1], CONCURRENCY, Setup(), how, dry_run=True)
    progress(dry)
    scenario.measurements.append(dry)
    at_once = {}
    for count in chain:
        times = settings.repeats if count <= REPEATED_AT_ONCE_UP_TO else 1
        at_once[count] = rates_at_once(NAME, servers, own, count, CONCURRENCY, Setup(), (times, 0))
        own.drop(count)
    own.drop(rows[-1])
    scenario.extra["growth"] = growth(scenario)
    scenario.extra["chain_at_once"] = at_once
    scenario.extra["linear"] = linear(scenario, at_once)
    scenario.extra["dry_run"] = {"rows": rows[-1], "peak_rss_mib": dry.peak_rss_mib}
    return scenario


def peaks(scenario: Scenario) -> dict[int, int]:
    """Peak RSS (KiB) by rows, of the apply runs that succeeded (not the dry run)."""
    return {
        m.secrets: m.peak_rss_kib
        for m in scenario.measurements
        if m.peak_rss_kib is not None and m.all_succeeded and not m.dry_run
    }


def growth(scenario: Scenario) -> list[dict[str, Any]]:
    """Bytes of peak RSS per extra row, for every pair of row counts x and 10x measured."""
    measured = peaks(scenario)
    return [
        {
            "from_rows": low,
            "to_rows": low * 10,
            "bytes_per_row": (measured[low * 10] - measured[low]) * 1024 / (low * 9),
        }
        for low in sorted(measured)
        if low * 10 in measured
    ]


def linear(scenario: Scenario, at_once: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """Over the chain of row counts x, 10x, 100x run at once: apply's rate over bare's at each
    (None where a run failed or was too short to read), their min / max, and the growth of
    each step. The rates of the runs taken in turn come along, for the record."""
    chain = sorted(at_once)
    per_row = {g["from_rows"]: g["bytes_per_row"] for g in growth(scenario)}
    if len(chain) != 3 or chain[0] not in per_row or chain[1] not in per_row:
        return None
    rates = {m.secrets: m.rate for m in scenario.measurements if m.all_succeeded and not m.dry_run}
    ratios: list[float | None] = [at_once[count]["ratio"] for count in chain]
    measured = [r for r in ratios if r is not None]
    low, mid = per_row[chain[0]], per_row[chain[1]]
    return {
        "rows": chain,
        "ratios": ratios,
        "rate_min_over_max": min(measured) / max(measured) if len(measured) == 3 else None,
        "rates_in_turn": [rates.get(count) for count in chain],
        "bytes_per_row": [low, mid],
        "growth_ratio": mid / low if low > 0 else None,
    }
