"""Many accounts (issue 12): a run that lists 1,000 accounts and writes 10 secrets to each.

- **Throughput**: 1,000 accounts x 10 secrets at 50 ms, concurrency 256, apply at its default
  ``--max-rps`` (a CSV manifest with an ``account`` column, account by account), against the
  bare loop sending the same requests (one GET of each account's secrets, then its 10 POSTs;
  ``bare.py --accounts 1000 --list``) at the same concurrency. The rate is API requests (the
  emulator's count: 1,000 GETs + 10,000 POSTs) per second of work; the median of the repeats.
- **Memory**: apply's peak RSS for 10,000 accounts x 10 secrets at 0 ms (concurrency 256,
  default ``--max-rps``, no ``MALLOC_ENV``: what users run).
"""

from __future__ import annotations

from clients import Client, Manifests, run_apply
from measurements import Measurement, Scenario, Settings
from processes import Servers, Setup
from runs import LATENCY, bare_and_apply, progress

NAME = "many-accounts"
ACCOUNTS_CONCURRENCY = 256
MANY_ACCOUNTS = (1_000, 10)  # accounts, secrets each
MANY_ACCOUNTS_RSS = (10_000, 10)
QUICK_MANY_ACCOUNTS = (100, 10)
QUICK_MANY_ACCOUNTS_RSS = (1_000, 10)
SMOKE_MANY_ACCOUNTS = (4, 5)
SMOKE_MANY_ACCOUNTS_RSS = (8, 5)


def request_ratio(numerator: Measurement, denominator: Measurement) -> float | None:
    if numerator.error or denominator.error or denominator.request_rate <= 0:
        return None
    return numerator.request_rate / denominator.request_rate


def scenario_many_accounts(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    accounts, each = settings.many_accounts
    scenario = Scenario(
        NAME,
        f"{accounts:,} accounts x {each} secrets at {LATENCY * 1000:g} ms, concurrency "
        f"{ACCOUNTS_CONCURRENCY}: apply (default --max-rps) vs bare sending the same requests "
        "(a GET per account, then its POSTs); requests/s",
    )
    bare, apply = bare_and_apply(
        servers,
        NAME,
        manifests,
        accounts * each,
        ACCOUNTS_CONCURRENCY,
        Setup(latency=LATENCY),
        settings.cpu_bound_repeats,  # CPU-bound on both sides: see runs.CPU_BOUND_REPEATS
        bare_how=Client(accounts=accounts, listing=True),
        apply_how=Client(accounts=accounts),
        max_rps=None,
    )
    for m in (bare, apply):
        m.ratio_vs_bare = request_ratio(m, bare)
    scenario.measurements += [bare, apply]
    scenario.extra["throughput"] = {
        "accounts": accounts,
        "secrets_per_account": each,
        "bare_requests": bare.requests,
        "apply_requests": apply.requests,
        "bare_request_rate": bare.request_rate,
        "apply_request_rate": apply.request_rate,
        "apply_vs_bare": apply.ratio_vs_bare,
    }
    if settings.many_accounts_rss is not None:
        accounts, each = settings.many_accounts_rss
        m = run_apply(
            servers,
            NAME,
            manifests,
            accounts * each,
            ACCOUNTS_CONCURRENCY,
            Setup(),
            Client(accounts=accounts, malloc_tuned=False),
            max_rps=None,
        )
        progress(m)
        scenario.measurements.append(m)
        scenario.extra["memory"] = {
            "accounts": accounts,
            "secrets_per_account": each,
            "peak_rss_mib": m.peak_rss_mib,
        }
    return scenario
