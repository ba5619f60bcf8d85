"""Throughput over TLS: bare vs apply against the emulator serving https.

The emulator (``tls_emulator.py``) serves a self-signed certificate for IP 127.0.0.1, made with
the ``openssl`` CLI; apply trusts it with ``--ca-bundle``, the bare loop with an
``ssl.SSLContext`` loaded with it (``bare.py --cafile``). Both at concurrency 256, at 0 ms and
at 50 ms, on the default loop with ``MALLOC_ENV``, taken in turn, the median of the repeats;
then, as the client's CPU may bound the rate at both (``runs.judged_at_once``), again at once
(``together.rates_at_once``), whose ratio is the one the goal holds. ``extra["at_once"]`` has
them by latency in ms (``at_once_key``).
"""

from __future__ import annotations

from clients import Manifests
from measurements import Measurement, RunFailed, Scenario, Settings, ratio
from processes import Servers, Setup, make_certificate
from runs import LATENCY, bare_and_apply, judged_at_once, repeats_for
from together import rates_at_once

NAME = "tls"
TLS_CONCURRENCY = 256
TLS_LATENCIES = (0.0, LATENCY)


def at_once_key(latency: float) -> str:
    """Where ``extra["at_once"]`` keeps the comparison at ``latency`` seconds: "0", "50"."""
    return f"{latency * 1000:g}"


def scenario_tls(settings: Settings, manifests: Manifests, servers: Servers) -> Scenario:
    scenario = Scenario(
        NAME,
        f"https (self-signed certificate, verified), bare vs apply at concurrency "
        f"{TLS_CONCURRENCY}, latency {' and '.join(f'{s * 1000:g}' for s in TLS_LATENCIES)} ms",
    )
    latencies = TLS_LATENCIES[:1] if settings.smoke else TLS_LATENCIES  # smoke: fewer processes
    try:
        certificate = make_certificate(manifests.folder)
    except RunFailed as exc:
        for latency in latencies:
            for client in ("bare", "apply"):
                m = Measurement(NAME, client, TLS_CONCURRENCY, latency * 1000, settings.secrets)
                m.tls, m.error = True, str(exc)
                scenario.measurements.append(m)
        return scenario
    scenario.extra["at_once"] = {}
    for latency in latencies:
        setup = Setup(latency=latency, tls=certificate)
        repeats = repeats_for(settings, TLS_CONCURRENCY, latency)
        bare, apply = bare_and_apply(
            servers, NAME, manifests, settings.secrets, TLS_CONCURRENCY, setup, repeats
        )
        for m in (bare, apply):
            m.ratio_vs_bare = ratio(m, bare)
        scenario.measurements += [bare, apply]
        if judged_at_once(TLS_CONCURRENCY, latency):
            scenario.extra["at_once"][at_once_key(latency)] = rates_at_once(
                NAME,
                servers,
                manifests,
                settings.secrets,
                TLS_CONCURRENCY,
                setup,
                (settings.cpu_bound_repeats, 0),
            )
    return scenario
