"""The manifests, and the three clients, each run once against an emulator.

``run_sequential`` (one ``requests`` POST after another, in this process), ``run_bare``
(``bare.py``) and ``run_apply`` (``python -m bulk_secrets apply``) each return a
``Measurement``. Each takes its emulator from ``Servers``: a fresh one, except in a smoke run.
``Client`` is how bare and apply are run: event loop, glibc's malloc, accounts.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from dataset import key_for, value_for, write_manifest
from measurements import Measurement, RunFailed
from processes import (
    API_KEY,
    BARE,
    DEFAULT_LOOP,
    ClientRun,
    Lease,
    Servers,
    Setup,
    client_timeout,
    expected_rate,
    json_object,
    local_session,
    run_client,
    tail,
)
from timeline import Timeline

RETRIES = 8
DEFAULT_MAX_RPS = 50.0  # apply's default --max-rps (per account), only to bound a run's time
SEQUENTIAL_MAX_SECONDS = 60.0


# --- manifests ------------------------------------------------------------------------------


class Manifests:
    """Single-account CSV manifests by size, in one temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paths: dict[int, Path] = {}
        self._lock = threading.Lock()  # a smoke run asks from several threads

    def get(self, count: int) -> Path:
        with self._lock:
            if count not in self._paths:
                self._paths[count] = write_manifest(self.folder / f"secrets-{count}.csv", count)
            return self._paths[count]

    def drop(self, count: int) -> None:
        """Delete the manifest of ``count`` rows (a large one, no longer needed)."""
        with self._lock:
            path = self._paths.pop(count, None)
        if path is not None:
            path.unlink(missing_ok=True)


_FILES = itertools.count(1)  # apply's report files and per-run manifests, one per run


@dataclass(frozen=True)
class Client:
    """How a bare or apply run is made, beyond its size and concurrency."""

    loop: str = DEFAULT_LOOP  # the event loop (bare's --loop, the CLI's BULK_SECRETS_LOOP)
    malloc_tuned: bool = True  # processes.MALLOC_ENV: for runs compared with the bare loop
    accounts: int = 1  # the secrets spread over this many accounts (apply: a CSV column)
    listing: bool = False  # bare: GET each account's secrets first, as apply lists them
    cpus: frozenset[int] | None = None  # the CPUs the client runs on (None: any)
    emulator_cpus: frozenset[int] | None = None  # those its fresh emulator runs on
    # The barrier the client waits at, once its emulator is up, with the runs it is to start
    # with, and the timeline that reads their emulators as they go (see together.py).
    together: threading.Barrier | None = field(default=None, compare=False)
    timeline: Timeline | None = field(default=None, compare=False)


def launch_and_fill(
    command: list[str], timeout: float, how: Client, server: Lease, m: Measurement
) -> ClientRun:
    """Run a client's ``command`` against ``server`` as ``how`` says (see
    ``processes.run_client``), watched by ``how.timeline`` if any; then fill in ``m`` what the
    server saw."""
    if how.timeline is not None:
        how.timeline.watch(id(m), server)
    try:
        run = run_client(
            command,
            timeout,
            loop=how.loop,
            malloc_tuned=how.malloc_tuned,
            cpus=how.cpus,
            together=how.together,
        )
    finally:
        if how.timeline is not None:
            m.created = how.timeline.take(id(m))
    server.fill(m)
    if how.timeline is not None and m.connections is not None:
        m.connections -= 1  # the timeline's own
    return run


# --- the three clients ----------------------------------------------------------------------


def run_sequential(servers: Servers, scenario: str, latency: float, sample: int) -> Measurement:
    """One POST after another over one ``requests.Session``, in this process."""
    setup = Setup(latency=latency)
    m = Measurement(scenario, "sequential", 1, latency * 1000, sample, server=setup.describe())
    m.sampled = True
    m.note = f"sampled: {sample} secrets"
    try:
        with servers.lease(setup) as server:
            url = f"{server.url}/v1/accounts/{server.account}/secrets"
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
            cpu_started = time.process_time()
            started = time.perf_counter()
            with local_session() as session:
                for index in range(1, sample + 1):
                    if time.perf_counter() - started > SEQUENTIAL_MAX_SECONDS:
                        m.note += f", stopped after {SEQUENTIAL_MAX_SECONDS:g}s"
                        break
                    key_name = key_for(index)
                    secret_id = key_name.lower().replace("_", "-")
                    body = {
                        "name": f"accounts/{server.account}/secrets/{secret_id}",
                        "keyName": key_name,
                        "value": value_for(index),
                    }
                    response = session.post(url, data=json.dumps(body), headers=headers, timeout=30)
                    m.succeeded += response.status_code == 200
            m.work_seconds = m.wall_seconds = time.perf_counter() - started
            m.client_cpu_seconds = time.process_time() - cpu_started
            server.fill(m)
    except (RunFailed, requests.RequestException) as exc:
        m.error = str(exc) or type(exc).__name__
    return m


def new_measurement(
    scenario: str, client: str, secrets: int, concurrency: int, setup: Setup, how: Client
) -> Measurement:
    m = Measurement(scenario, client, concurrency, setup.latency * 1000, secrets)
    m.server = setup.describe()
    m.tls = setup.tls is not None
    m.accounts = how.accounts
    m.loop = how.loop
    m.malloc_tuned = how.malloc_tuned
    return m


def run_bare(
    servers: Servers,
    scenario: str,
    secrets: int,
    concurrency: int,
    setup: Setup,
    how: Client = Client(),
) -> Measurement:
    """``bare.py`` in a process of its own."""
    m = new_measurement(scenario, "bare", secrets, concurrency, setup, how)
    timeout = client_timeout(secrets, expected_rate(concurrency, setup.latency))
    try:
        with servers.lease(setup, how.emulator_cpus) as server:
            command = [sys.executable, str(BARE), "--base-url", server.url]
            command += ["--account", server.account, "--count", str(secrets)]
            command += ["--concurrency", str(concurrency), "--deadline", f"{timeout - 30:.0f}"]
            command += ["--loop", how.loop, "--accounts", str(how.accounts)]
            command += ["--list"] if how.listing else []
            command += ["--cafile", str(setup.tls.cert)] if setup.tls else []
            run = launch_and_fill(command, timeout, how, server, m)
        record = json_object(run.stdout)
    except (RunFailed, requests.RequestException) as exc:
        m.error = str(exc) or type(exc).__name__
        return m
    m.succeeded = int(record["succeeded"])
    m.work_seconds = float(record["seconds"])
    if record.get("loop") != how.loop:
        m.error = f"ran on {record.get('loop')}, not {how.loop}"
    m.wall_seconds = run.wall_seconds
    m.peak_rss_kib = run.peak_rss_kib
    m.client_cpu_seconds = run.cpu_seconds
    m.exit_code = run.returncode
    if run.returncode != 0:
        m.note = f"exit {run.returncode}: statuses {record['statuses']}"
    return m


PLANNED = re.compile(r"plan: (\d+) create")  # apply --dry-run's line on stderr


def run_apply(
    servers: Servers,
    scenario: str,
    manifests: Manifests,
    secrets: int,
    concurrency: int,
    setup: Setup,
    how: Client = Client(),
    *,
    max_rps: float | None = 0.0,
    dry_run: bool = False,
) -> Measurement:
    """``python -m bulk_secrets apply`` end to end, in a process of its own.

    The manifest is the single-account CSV of ``secrets`` rows from ``manifests``, used with
    ``--account``; with ``how.accounts`` > 1 a manifest with an account column is written for
    the run instead (its accounts named after the run's), and deleted after it. ``max_rps``
    None: apply's default rate. ``dry_run``: list and plan, and ``succeeded`` counts the
    secrets planned for creation (``work_seconds`` is the process's wall time: a dry run
    prints no summary)."""
    m = new_measurement(scenario, "apply", secrets, concurrency, setup, how)
    m.max_rps = max_rps
    m.dry_run = dry_run
    rate_guess = expected_rate(concurrency, setup.latency)
    if setup.rate_limit:
        rate_guess = min(rate_guess, setup.rate_limit)
    if max_rps is None:
        rate_guess = min(rate_guess, DEFAULT_MAX_RPS * how.accounts)
    if setup.share_429:
        rate_guess /= 10  # every 429 pauses the account a second
    number = next(_FILES)
    report = manifests.folder / f"report-{os.getpid()}-{number}.jsonl"
    own_manifest: Path | None = None
    try:
        with servers.lease(setup, how.emulator_cpus) as server:
            command = [sys.executable, "-m", "bulk_secrets", "apply"]
            if how.accounts > 1:
                own_manifest = manifests.folder / f"accounts-{os.getpid()}-{number}.csv"
                write_manifest(own_manifest, secrets, accounts=how.accounts, account=server.account)
                command += [str(own_manifest)]
            else:
                command += [str(manifests.get(secrets)), "--account", server.account]
            command += ["--base-url", server.url, "--concurrency", str(concurrency)]
            command += [] if max_rps is None else ["--max-rps", f"{max_rps:g}"]
            command += ["--retries", str(RETRIES)]
            command += ["--ca-bundle", str(setup.tls.cert)] if setup.tls else []
            if dry_run:
                command += ["--dry-run"]
            else:
                command += ["--report", str(report), "--output", "json"]
            timeout = client_timeout(secrets, rate_guess)
            run = launch_and_fill(command, timeout, how, server, m)
        m.exit_code = run.returncode
        m.wall_seconds = run.wall_seconds
        m.peak_rss_kib = run.peak_rss_kib
        m.client_cpu_seconds = run.cpu_seconds
        summary = {} if dry_run else json_object(run.stdout)
    except (RunFailed, requests.RequestException) as exc:
        m.error = str(exc) if m.exit_code is None else f"exit {m.exit_code}: {exc}"
        return m
    finally:
        report.unlink(missing_ok=True)
        if own_manifest is not None:
            own_manifest.unlink(missing_ok=True)
    if dry_run:
        planned = PLANNED.search(run.stderr)
        if planned is None:
            m.error = f"exit {run.returncode}: no plan line on stderr: {tail(run.stderr, 2)}"
            return m
        m.succeeded = int(planned[1])
        m.work_seconds = run.wall_seconds
    else:
        m.summary = summary
        m.succeeded = int(summary.get("succeeded", 0))
        m.work_seconds = float(summary.get("durationSeconds", 0.0))
    if run.returncode != 0:
        m.note = f"exit {run.returncode}: {tail(run.stderr, 2)}"
    return m
