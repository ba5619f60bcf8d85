"""The manifests, and the three clients, each run once against a fresh emulator.

``run_sequential`` (one ``requests`` POST after another, in this process), ``run_bare``
(``bare.py``) and ``run_apply`` (``python -m bulk_secrets apply``) each return a
``Measurement``. Each takes its emulator from ``Servers``: a fresh one, except in a smoke run.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests
from measurements import Measurement, RunFailed
from processes import (
    API_KEY,
    BARE,
    Servers,
    client_timeout,
    emulator_knobs,
    expected_rate,
    json_object,
    local_session,
    run_client,
    tail,
)

RETRIES = 8
SEQUENTIAL_MAX_SECONDS = 60.0


# --- manifests ------------------------------------------------------------------------------


def key_for(index: int) -> str:
    return f"BENCH_{index:06d}"  # the same as bare.py's


def value_for(index: int) -> str:
    return f"bench-value-{index:07d}-abcdefghijklmnopqrstuvwxyz"  # the same as bare.py's


def write_manifest(path: Path, count: int) -> Path:
    """A CSV manifest of ``count`` secrets, streamed to disk."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("keyName,value\n")
        out.writelines(f"{key_for(i)},{value_for(i)}\n" for i in range(1, count + 1))
    return path


class Manifests:
    """CSV manifests by size, in one temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paths: dict[int, Path] = {}
        self._lock = threading.Lock()  # a smoke run asks from several threads

    def get(self, count: int) -> Path:
        with self._lock:
            if count not in self._paths:
                self._paths[count] = write_manifest(self.folder / f"secrets-{count}.csv", count)
            return self._paths[count]


_REPORTS = itertools.count(1)  # apply's report files, one per run


# --- the three clients ----------------------------------------------------------------------


def run_sequential(servers: Servers, scenario: str, latency: float, sample: int) -> Measurement:
    """One POST after another over one ``requests.Session``, in this process."""
    knobs, described = emulator_knobs(latency)
    m = Measurement(scenario, "sequential", 1, latency * 1000, sample, server=described)
    m.sampled = True
    m.note = f"sampled: {sample} secrets"
    try:
        with servers.lease(knobs) as server:
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


def run_bare(
    servers: Servers, scenario: str, secrets: int, concurrency: int, latency: float
) -> Measurement:
    """``bare.py`` in a process of its own."""
    knobs, described = emulator_knobs(latency)
    m = Measurement(scenario, "bare", concurrency, latency * 1000, secrets, server=described)
    timeout = client_timeout(secrets, expected_rate(concurrency, latency))
    try:
        with servers.lease(knobs) as server:
            command = [sys.executable, str(BARE), "--base-url", server.url]
            command += ["--account", server.account, "--count", str(secrets)]
            command += ["--concurrency", str(concurrency), "--deadline", f"{timeout - 30:.0f}"]
            run = run_client(command, timeout)
            server.fill(m)
        record = json_object(run.stdout)
    except (RunFailed, requests.RequestException) as exc:
        m.error = str(exc) or type(exc).__name__
        return m
    m.succeeded = int(record["succeeded"])
    m.work_seconds = float(record["seconds"])
    m.loop = str(record.get("loop"))
    m.wall_seconds = run.wall_seconds
    m.peak_rss_kib = run.peak_rss_kib
    m.client_cpu_seconds = run.cpu_seconds
    m.exit_code = run.returncode
    if run.returncode != 0:
        m.note = f"exit {run.returncode}: statuses {record['statuses']}"
    return m


def run_apply(
    servers: Servers,
    scenario: str,
    manifest: Path,
    secrets: int,
    concurrency: int,
    *,
    latency: float = 0.0,
    rate_limit: int = 0,
    max_rps: float = 0.0,
) -> Measurement:
    """``python -m bulk_secrets apply`` end to end, in a process of its own."""
    knobs, described = emulator_knobs(latency, rate_limit)
    m = Measurement(scenario, "apply", concurrency, latency * 1000, secrets, server=described)
    m.max_rps = max_rps
    rate_guess = float(rate_limit) if rate_limit else expected_rate(concurrency, latency)
    report = manifest.with_name(f"report-{os.getpid()}-{next(_REPORTS)}.jsonl")
    try:
        with servers.lease(knobs) as server:
            command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest)]
            command += ["--account", server.account, "--base-url", server.url]
            command += ["--concurrency", str(concurrency), "--max-rps", f"{max_rps:g}"]
            command += ["--retries", str(RETRIES), "--report", str(report), "--output", "json"]
            run = run_client(command, client_timeout(secrets, rate_guess))
            server.fill(m)
        m.exit_code = run.returncode
        m.wall_seconds = run.wall_seconds
        m.peak_rss_kib = run.peak_rss_kib
        m.client_cpu_seconds = run.cpu_seconds
        summary = json_object(run.stdout)
    except (RunFailed, requests.RequestException) as exc:
        m.error = str(exc) if m.exit_code is None else f"exit {m.exit_code}: {exc}"
        return m
    finally:
        report.unlink(missing_ok=True)
    m.summary = summary
    m.succeeded = int(summary.get("succeeded", 0))
    m.work_seconds = float(summary.get("durationSeconds", 0.0))
    if run.returncode != 0:
        m.note = f"exit {run.returncode}: {tail(run.stderr, 2)}"
    return m
