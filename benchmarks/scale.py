"""Memory, and how cost grows with the manifest: apply over CSV manifests of growing size.

apply at 0 ms, concurrency 64, ``--max-rps 0``, a JSONL report, on the default loop without
``MALLOC_ENV`` (what users run), over CSV manifests of 10,000, 20,000, 100,000, 200,000 and
1,000,000 rows; runs of up to 20,000 rows last a few seconds and are repeated (the run of
median rate counts), and so are those of the linear chain (10,000, 100,000, 1,000,000), whose
rates are compared: a single run moves by a tenth with the machine's speed, as much as the goal
allows. The repeats are taken in turn, each size once before any size again, so that a slow
minute of the machine falls on every size alike. Then ``apply --dry-run`` of the largest
manifest (list, plan, print the plan, write nothing).

- **Growth**: (peak RSS at 10x rows - peak RSS at x rows) / 9x, in bytes per extra row, for
  every such pair measured (10k -> 100k, 20k -> 200k, 100k -> 1M).
- **Linear cost**: over a chain x, 10x, 100x (10k, 100k, 1M): the rates (secrets per second
  of the run) are flat when min / max >= 0.90; memory per row is flat when the growth of the
  last step (100k -> 1M) is at most 1.10 times that of the step before (10k -> 100k).
"""

from __future__ import annotations

from typing import Any

from clients import Client, Manifests, run_apply
from measurements import Measurement, Scenario, Settings
from processes import Servers, Setup
from runs import CONCURRENCY, median_run, progress

NAME = "memory"
MEMORY_ROWS = (10_000, 20_000, 100_000, 200_000, 1_000_000)
SMOKE_MEMORY_ROWS = (1, 10, 100)
REPEATED_UP_TO = 20_000  # rows: a run this size lasts a few seconds, so it is repeated


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
    chain = {rows[0], rows[0] * 10, rows[0] * 100}
    repeats = {
        count: settings.repeats if count <= REPEATED_UP_TO or count in chain else 1
        for count in rows
    }
    runs: dict[int, list[Measurement]] = {count: [] for count in rows}
    for repeat in range(max(repeats.values())):
        for count in rows:
            if repeat < repeats[count]:
                runs[count].append(run_apply(servers, NAME, own, count, CONCURRENCY, Setup(), how))
                progress(runs[count][-1])
            if repeat == repeats[count] - 1 and count != rows[-1]:
                own.drop(count)  # its last run: the manifest is no longer needed
    scenario.measurements += [median_run(runs[count]) for count in rows]
    dry = run_apply(servers, NAME, own, rows[-1], CONCURRENCY, Setup(), how, dry_run=True)
    progress(dry)
    own.drop(rows[-1])
    scenario.measurements.append(dry)
    scenario.extra["growth"] = growth(scenario)
    scenario.extra["linear"] = linear(scenario)
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


def linear(scenario: Scenario) -> dict[str, Any] | None:
    """Rates and growth over the first chain of row counts x, 10x, 100x measured."""
    rates = {m.secrets: m.rate for m in scenario.measurements if m.all_succeeded and not m.dry_run}
    per_row = {g["from_rows"]: g["bytes_per_row"] for g in growth(scenario)}
    for low in sorted(rates):
        chain = [low, low * 10, low * 100]
        if all(count in rates for count in chain) and low in per_row and low * 10 in per_row:
            chain_rates = [rates[count] for count in chain]
            return {
                "rows": chain,
                "rates": chain_rates,
                "rate_min_over_max": min(chain_rates) / max(chain_rates),
                "bytes_per_row": [per_row[low], per_row[low * 10]],
                "growth_ratio": per_row[low * 10] / per_row[low] if per_row[low] > 0 else None,
            }
    return None
