"""Benchmark ``bulk-secrets apply`` against the floor (bare aiohttp) and the naive loop.

    python benchmarks/run.py [--secrets N] [--quick] [--json-out PATH]
                             [--memory-rows 10000,100000,1000000] [--skip-memory] [--repeats N]

Every server is an emulator subprocess (``python -m bulk_secrets emulator``) bound to
127.0.0.1, a fresh one for each measured run so its state starts empty. The bare loop and the
CLI each run in a process of their own, started through ``peak_rss.py``, which reads the
process's peak RSS and CPU time when it exits; the sequential ``requests`` loop runs in this
process. What each scenario means and how the ratios are computed: ``benchmarks/README.md``.

The exit code is 0 when every run gave a measurement (whether or not the targets were met), and
1 when a run crashed, timed out or printed no summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import requests

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
BARE = HERE / "bare.py"
PEAK_RSS = HERE / "peak_rss.py"
DEFAULT_JSON_OUT = HERE / "results" / "latest.json"

HOST = "127.0.0.1"  # every server binds here, every request goes here
API_KEY = "bench-throwaway-key"  # the only key the emulators accept; it guards nothing
ACCOUNT = "bench"
CONCURRENCY = 64
LATENCY = 0.050  # seconds, the emulator's --latency in the 50 ms scenarios
SWEEP = (16, 64, 256)
QUICK_SWEEP = (16, 64)  # 64 is the 50 ms scenario's own run: one more point is measured
RATE_LIMIT = 200  # requests/s the rate-limited emulator allows, with a burst of as many
RATE_LIMITED_SECRETS = 6000
RATE_LIMITED_MAX_RPS = (0.0, 250.0)  # unknown limit (must adapt), and an overestimate
RETRIES = 8
MEMORY_ROWS = (10_000, 100_000, 1_000_000)
SEQUENTIAL_SAMPLE = {0.0: 300, LATENCY: 100}  # sequential is sampled: it is far too slow
QUICK_SEQUENTIAL_SAMPLE = {0.0: 50, LATENCY: 20}
SEQUENTIAL_MAX_SECONDS = 60.0
REPEATS = 3  # runs of bare and of apply, interleaved, where one run lasts only seconds
SHORT_RUN_RATE = 2500.0  # requests/s of ceiling above which a run of N lasts only seconds
EMULATOR_READY_SECONDS = 30.0
EXTRA_CONNECTIONS = 4  # apply may open at most concurrency + this many TCP connections

# The targets checked at the end (PASS/MISS); a missing measurement is SKIP.
TARGET_BARE_0MS = 0.85
TARGET_SEQUENTIAL_50MS = 50.0
TARGET_BARE_50MS = 0.95
TARGET_GOODPUT_SHARE = 0.95
TARGET_429_SHARE = 0.05
TARGET_PEAK_RSS_MIB = 200.0
TARGET_PEAK_RSS_ROWS = 1_000_000
TARGET_GROWTH_BYTES_PER_ROW = 120.0


def since_start() -> float:
    return time.perf_counter() - STARTED


class RunFailed(Exception):
    """A client run gave no measurement: it crashed, timed out or printed no summary."""


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Measurement:
    """One client's run against one fresh emulator."""

    scenario: str
    client: str  # "sequential", "bare" or "apply"
    concurrency: int
    latency_ms: float
    secrets: int  # asked for (for sequential: the sample size)
    succeeded: int = 0
    # Timed inside the client: the sequential loop; bare.py's loop (session open to close);
    # apply's summary durationSeconds (the run as the CLI times it; no interpreter start-up).
    work_seconds: float = 0.0
    wall_seconds: float = 0.0  # the whole client process, interpreter start-up included
    server: str = ""  # the emulator's fault knobs
    loop: str | None = None  # bare's event loop (apply picks the same: uvloop if installed)
    max_rps: float | None = None  # apply's --max-rps
    sampled: bool = False
    requests_by_status: dict[str, int] = field(default_factory=dict)  # from /_emulator/stats
    connections: int | None = None  # TCP connections the client opened (from the stats)
    peak_rss_kib: int | None = None
    client_cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None
    exit_code: int | None = None
    summary: dict[str, Any] | None = None  # apply's JSON summary
    ratio_vs_bare: float | None = None
    ratio_vs_sequential: float | None = None
    repeat_rates: list[float] = field(default_factory=list)  # every repeat; this is the median
    note: str = ""
    error: str | None = None  # why there is no measurement
    # Seconds since the harness started: when this run's emulator was started, and when the
    # run was over (emulator stopped). What lies between runs is the harness's own time.
    began_at: float = field(default_factory=since_start)
    ended_at: float | None = None

    @property
    def rate(self) -> float:
        """Secrets created per second of ``work_seconds``."""
        return self.succeeded / self.work_seconds if self.work_seconds > 0 else 0.0

    @property
    def wall_rate(self) -> float:
        return self.succeeded / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def requests(self) -> int:
        return sum(self.requests_by_status.values())

    @property
    def share_429(self) -> float:
        limited = sum(n for k, n in self.requests_by_status.items() if k.endswith(" 429"))
        return limited / self.requests if self.requests else 0.0

    @property
    def peak_rss_mib(self) -> float | None:
        return None if self.peak_rss_kib is None else self.peak_rss_kib / 1024

    @property
    def all_succeeded(self) -> bool:
        return self.error is None and self.succeeded == self.secrets

    @property
    def connection_limit(self) -> int:
        return self.concurrency + EXTRA_CONNECTIONS

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.update(
            rate=self.rate,
            wall_rate=self.wall_rate,
            requests=self.requests,
            share_429=self.share_429,
            peak_rss_mib=self.peak_rss_mib,
            all_succeeded=self.all_succeeded,
            connection_limit=self.connection_limit,
        )
        return record


@dataclass
class Scenario:
    name: str
    description: str
    measurements: list[Measurement] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def find(self, client: str, concurrency: int | None = None) -> Measurement | None:
        for m in self.measurements:
            if m.client == client and concurrency in (None, m.concurrency):
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "measurements": [m.to_dict() for m in self.measurements],
            **self.extra,
        }


@dataclass(frozen=True)
class Check:
    name: str
    observed: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else "PASS" if self.passed else "MISS"


@dataclass(frozen=True)
class Settings:
    secrets: int
    quick: bool
    sequential_sample: dict[float, int]
    repeats: int
    sweep: tuple[int, ...]
    rate_limited_secrets: int
    memory_rows: tuple[int, ...]  # empty: memory is not measured
    json_out: Path


def ratio(numerator: Measurement | None, denominator: Measurement | None) -> float | None:
    if numerator is None or denominator is None or denominator.rate <= 0:
        return None
    return numerator.rate / denominator.rate


# --- the emulator ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def local_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: loopback only
    return session


class Emulator:
    """``bulk-secrets emulator`` in a subprocess of its own, on a free loopback port."""

    def __init__(self, *knobs: str) -> None:
        self.knobs = list(knobs)
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._drain_thread: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=40)

    def __enter__(self) -> Emulator:
        try:
            for _ in range(3):  # another program may take the free port before the emulator
                if self._start(free_port()):
                    return self
        except BaseException:  # this harness is being stopped: stop the emulator too
            self._stop()
            raise
        raise RunFailed("the emulator did not start: " + " | ".join(self._tail))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self, port: int) -> bool:
        command = [sys.executable, "-m", "bulk_secrets", "emulator", "--host", HOST]
        command += ["--port", str(port), "--key", API_KEY, *self.knobs]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        ready = threading.Event()
        settled = threading.Event()  # set on the ready line, or when stderr ends
        assert process.stderr is not None
        drain = threading.Thread(
            target=self._drain, args=(process.stderr, ready, settled), daemon=True
        )
        drain.start()
        self._drain_thread = drain
        settled.wait(EMULATOR_READY_SECONDS)
        if ready.is_set():
            self.url = f"http://{HOST}:{port}"
            return True
        self._stop()
        return False

    def _drain(self, stream: IO[str], ready: threading.Event, settled: threading.Event) -> None:
        """Read stderr until it ends: spot the ready line, keep the last lines, never block."""
        for line in stream:
            self._tail.append(line.rstrip())
            if "emulator listening on" in line:
                ready.set()
                settled.set()
        settled.set()

    def _stop(self) -> None:
        process, self._process = self._process, None
        drain, self._drain_thread = self._drain_thread, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does: the emulator closes, exits
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if drain is not None:
            drain.join(timeout=5)  # stderr ends with the process
        if process.stderr is not None and (drain is None or not drain.is_alive()):
            process.stderr.close()

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``; its own connection is taken off ``connections``."""
        with local_session() as session:
            response = session.get(f"{self.url}/_emulator/stats", timeout=10)
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
        stats["connections"] = int(stats["connections"]) - 1
        return stats

    def cpu_seconds(self) -> float:
        """The emulator's CPU time so far (user + system), from /proc/PID/stat."""
        if self._process is None:
            return 0.0
        try:
            text = Path(f"/proc/{self._process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emulator_knobs(latency: float, rate_limit: int = 0) -> tuple[list[str], str]:
    """The emulator's flags and a short description of them."""
    knobs = ["--latency", f"{latency:g}"]
    described = f"latency {latency * 1000:g} ms"
    if rate_limit:
        knobs += ["--rate-limit", str(rate_limit), "--burst", str(rate_limit)]
        described += f", rate limit {rate_limit}/s, burst {rate_limit}, Retry-After"
    return knobs, described


# --- client processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientRun:
    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    peak_rss_kib: int
    cpu_seconds: float


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    env["FIREWORKS_API_KEY"] = API_KEY
    env["NO_PROXY"] = env["no_proxy"] = HOST
    return env


def run_client(command: Sequence[str], timeout: float) -> ClientRun:
    """Run a client through ``peak_rss.py``, in a process group of its own, killed on timeout."""
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        usage_path = Path(tmp) / "usage.json"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("w") as out, err_path.open("w") as err:
            launcher = subprocess.Popen(
                [sys.executable, str(PEAK_RSS), str(usage_path), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=client_env(),
                process_group=0,  # the launcher and the client: one group, killed together
            )
            try:
                launcher.wait(timeout=timeout)
            except BaseException as exc:  # the timeout, or this harness being stopped
                if launcher.poll() is None:
                    os.killpg(launcher.pid, signal.SIGKILL)
                    launcher.wait()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise RunFailed(f"timed out after {timeout:.0f}s") from None
                raise
        stdout, stderr = out_path.read_text(), err_path.read_text()
        try:
            usage = json.loads(usage_path.read_text())
        except (OSError, ValueError):
            raise RunFailed(f"the launcher failed: {tail(stderr)}") from None
    return ClientRun(
        returncode=int(usage["returncode"]),
        stdout=stdout,
        stderr=stderr,
        wall_seconds=float(usage["wallSeconds"]),
        peak_rss_kib=int(usage["peakRssKiB"]),
        cpu_seconds=float(usage["cpuSeconds"]),
    )


def tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def json_object(stdout: str) -> dict[str, Any]:
    """The JSON object a client printed on stdout (the last one, if anything came before)."""
    text = stdout.strip()
    start = 0 if text.startswith("{") else text.rfind("\n{") + 1
    try:
        record = json.loads(text[start:])
    except ValueError:
        raise RunFailed(f"no JSON summary on stdout: {tail(text)!r}") from None
    if not isinstance(record, dict):
        raise RunFailed("the summary on stdout is not a JSON object")
    return record


def client_timeout(secrets: int, expected_rate: float) -> float:
    """A generous bound on one run: a few times what it should take, plus start-up."""
    return 120.0 + 5.0 * secrets / expected_rate


def expected_rate(concurrency: int, latency: float) -> float:
    """A pessimistic rate guess, only for the timeouts."""
    return min(2000.0, concurrency / latency) if latency > 0 else 2000.0


def fill_from_server(m: Measurement, server: Emulator, cpu_before: float) -> None:
    m.server_cpu_seconds = server.cpu_seconds() - cpu_before
    stats = server.stats()
    m.requests_by_status = {str(k): int(n) for k, n in stats["requests"].items()}
    m.connections = int(stats["connections"])


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

    def get(self, count: int) -> Path:
        if count not in self._paths:
            self._paths[count] = write_manifest(self.folder / f"secrets-{count}.csv", count)
        return self._paths[count]


# --- the three clients ----------------------------------------------------------------------


def run_sequential(scenario: str, latency: float, sample: int) -> Measurement:
    """One POST after another over one ``requests.Session``, in this process."""
    knobs, described = emulator_knobs(latency)
    m = Measurement(scenario, "sequential", 1, latency * 1000, sample, server=described)
    m.sampled = True
    m.note = f"sampled: {sample} secrets"
    with Emulator(*knobs) as server:
        cpu_before = server.cpu_seconds()
        url = f"{server.url}/v1/accounts/{ACCOUNT}/secrets"
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
                    "name": f"accounts/{ACCOUNT}/secrets/{secret_id}",
                    "keyName": key_name,
                    "value": value_for(index),
                }
                response = session.post(url, data=json.dumps(body), headers=headers, timeout=30)
                m.succeeded += response.status_code == 200
        m.work_seconds = m.wall_seconds = time.perf_counter() - started
        m.client_cpu_seconds = time.process_time() - cpu_started
        fill_from_server(m, server, cpu_before)
    return m


def run_bare(scenario: str, secrets: int, concurrency: int, latency: float) -> Measurement:
    """``bare.py`` in a process of its own."""
    knobs, described = emulator_knobs(latency)
    m = Measurement(scenario, "bare", concurrency, latency * 1000, secrets, server=described)
    timeout = client_timeout(secrets, expected_rate(concurrency, latency))
    try:
        with Emulator(*knobs) as server:
            cpu_before = server.cpu_seconds()
            command = [sys.executable, str(BARE), "--base-url", server.url]
            command += ["--account", ACCOUNT, "--count", str(secrets)]
            command += ["--concurrency", str(concurrency), "--deadline", f"{timeout - 30:.0f}"]
            run = run_client(command, timeout)
            fill_from_server(m, server, cpu_before)
        record = json_object(run.stdout)
    except RunFailed as exc:
        m.error = str(exc)
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
    report = manifest.with_name(f"report-{os.getpid()}-{time.monotonic_ns()}.jsonl")
    try:
        with Emulator(*knobs) as server:
            cpu_before = server.cpu_seconds()
            command = [sys.executable, "-m", "bulk_secrets", "apply", str(manifest)]
            command += ["--account", ACCOUNT, "--base-url", server.url]
            command += ["--concurrency", str(concurrency), "--max-rps", f"{max_rps:g}"]
            command += ["--retries", str(RETRIES), "--report", str(report), "--output", "json"]
            run = run_client(command, client_timeout(secrets, rate_guess))
            fill_from_server(m, server, cpu_before)
        m.exit_code = run.returncode
        m.wall_seconds = run.wall_seconds
        m.peak_rss_kib = run.peak_rss_kib
        m.client_cpu_seconds = run.cpu_seconds
        summary = json_object(run.stdout)
    except RunFailed as exc:
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


# --- scenarios ------------------------------------------------------------------------------


def progress(m: Measurement) -> None:
    m.ended_at = since_start()
    if m.error:
        line = f"FAILED: {m.error}"
    else:
        line = f"{m.succeeded}/{m.secrets} in {m.work_seconds:.2f}s = {m.rate:,.0f}/s"
    print(
        f"  {m.ended_at:6.1f}s [{m.scenario}] {m.client} c={m.concurrency}: {line}",
        file=sys.stderr,
        flush=True,
    )


def bare_and_apply(
    scenario: str, manifests: Manifests, n: int, concurrency: int, latency: float, repeats: int
) -> tuple[Measurement, Measurement]:
    """Bare then apply, ``repeats`` times over, interleaved; each keeps its median run.

    Runs that last only seconds are at the mercy of anything else on the machine; the median
    of a few, taken turn about, is steadier than one.
    """
    bares: list[Measurement] = []
    applies: list[Measurement] = []
    for _ in range(repeats):
        bares.append(run_bare(scenario, n, concurrency, latency))
        progress(bares[-1])
        applies.append(run_apply(scenario, manifests.get(n), n, concurrency, latency=latency))
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
        rates = ", ".join(f"{rate:,.0f}" for rate in chosen.repeat_rates)
        chosen.note = (chosen.note + "; " if chosen.note else "") + f"median of {rates}/s"
    return chosen


def repeats_for(settings: Settings, concurrency: int, latency: float) -> int:
    short = latency == 0 or concurrency / latency >= SHORT_RUN_RATE
    return settings.repeats if short else 1


def scenario_latency(
    name: str, latency: float, settings: Settings, manifests: Manifests
) -> Scenario:
    """Sequential (sampled), bare and apply at concurrency 64, one emulator latency."""
    scenario = Scenario(
        name,
        f"emulator latency {latency * 1000:g} ms, concurrency {CONCURRENCY}: "
        "sequential requests (sampled), bare aiohttp, bulk-secrets apply",
    )
    n = settings.secrets
    sample = min(n, settings.sequential_sample[latency])
    sequential = run_sequential(name, latency, sample)
    progress(sequential)
    repeats = repeats_for(settings, CONCURRENCY, latency)
    bare, apply = bare_and_apply(name, manifests, n, CONCURRENCY, latency, repeats)
    scenario.measurements += [sequential, bare, apply]
    for m in scenario.measurements:
        m.ratio_vs_bare = ratio(m, bare)
        m.ratio_vs_sequential = ratio(m, sequential)
    return scenario


def scenario_sweep(settings: Settings, manifests: Manifests, at_50ms: Scenario) -> Scenario:
    """Bare vs apply at 50 ms over concurrency; the ceiling is concurrency / latency."""
    scenario = Scenario(
        "sweep-50ms",
        f"emulator latency {LATENCY * 1000:g} ms, bare vs apply over concurrency "
        f"{', '.join(map(str, settings.sweep))}; ceiling = concurrency / latency",
    )
    n = settings.secrets
    sequential = at_50ms.find("sequential")
    points = []
    for concurrency in settings.sweep:
        old_bare, old_apply = at_50ms.find("bare", concurrency), at_50ms.find("apply", concurrency)
        if old_bare is not None and old_apply is not None:  # the 50 ms scenario's own runs
            bare = dataclasses.replace(old_bare, scenario=scenario.name)
            apply = dataclasses.replace(old_apply, scenario=scenario.name)
            for m in (bare, apply):
                m.note = (m.note + "; " if m.note else "") + f"the run of {at_50ms.name}"
        else:
            repeats = repeats_for(settings, concurrency, LATENCY)
            bare, apply = bare_and_apply(scenario.name, manifests, n, concurrency, LATENCY, repeats)
        pair = [bare, apply]
        ceiling = concurrency / LATENCY
        for m in pair:
            m.ratio_vs_bare = ratio(m, bare)
            m.ratio_vs_sequential = ratio(m, sequential)
        scenario.measurements += pair
        points.append(
            {
                "concurrency": concurrency,
                "ceiling": ceiling,
                "bare_rate": bare.rate,
                "apply_rate": apply.rate,
                "bare_of_ceiling": bare.rate / ceiling,
                "apply_of_ceiling": apply.rate / ceiling,
                "apply_vs_bare": apply.ratio_vs_bare,
            }
        )
    scenario.extra["points"] = points
    return scenario


def scenario_rate_limited(settings: Settings, manifests: Manifests) -> Scenario:
    """Apply against an emulator that allows 200 requests/s (burst 200) and says Retry-After."""
    scenario = Scenario(
        "rate-limited",
        f"emulator rate limit {RATE_LIMIT}/s, burst {RATE_LIMIT}, with Retry-After; apply at "
        f"concurrency {CONCURRENCY} with --max-rps 0 (unknown limit) and --max-rps 250",
    )
    n = settings.rate_limited_secrets
    runs = []
    for max_rps in RATE_LIMITED_MAX_RPS:
        m = run_apply(
            scenario.name, manifests.get(n), n, CONCURRENCY, rate_limit=RATE_LIMIT, max_rps=max_rps
        )
        progress(m)
        scenario.measurements.append(m)
        runs.append(
            {
                "max_rps": max_rps,
                "goodput": m.rate,
                "goodput_of_limit": m.rate / RATE_LIMIT,
                "share_429": m.share_429,
                "all_succeeded": m.all_succeeded,
            }
        )
    scenario.extra["limit"] = RATE_LIMIT
    scenario.extra["runs"] = runs
    return scenario


def scenario_memory(settings: Settings, folder: Path) -> Scenario:
    """Peak RSS of apply over CSV manifests of growing size (each deleted after its run)."""
    rows = settings.memory_rows
    scenario = Scenario(
        "memory",
        f"peak RSS of apply for CSV manifests of {', '.join(f'{r:,}' for r in rows)} rows "
        f"(concurrency {CONCURRENCY}, --max-rps 0, latency 0 ms, JSONL report)",
    )
    for count in rows:
        manifest = write_manifest(folder / f"memory-{count}.csv", count)
        try:
            m = run_apply(scenario.name, manifest, count, CONCURRENCY)
        finally:
            manifest.unlink()
        progress(m)
        scenario.measurements.append(m)
    measured = sorted(
        (m.secrets, m.peak_rss_kib)
        for m in scenario.measurements
        if m.peak_rss_kib is not None and m.error is None
    )
    if len(measured) >= 2:
        pairs = dict(measured)
        if 100_000 in pairs and 1_000_000 in pairs:
            low, high = 100_000, 1_000_000
        else:
            (low, _), (high, _) = measured[-2], measured[-1]
        scenario.extra["growth"] = {
            "from_rows": low,
            "to_rows": high,
            "bytes_per_row": (pairs[high] - pairs[low]) * 1024 / (high - low),
        }
    return scenario


# --- checks and output ----------------------------------------------------------------------


def check_ratio(name: str, m: Measurement | None, target: float, against: str) -> Check:
    """``m``'s rate over the bare loop's or the sequential loop's, against a target."""
    if m is None:
        return Check(name, "not measured", None)
    value = m.ratio_vs_bare if against == "bare" else m.ratio_vs_sequential
    if m.error or value is None:
        return Check(name, f"no measurement: {m.error or 'the ' + against + ' run failed'}", False)
    return Check(name, f"{value:.2f}x {against}", value >= target)


def target_checks(scenarios: dict[str, Scenario]) -> list[Check]:
    checks = []
    at_0ms, at_50ms = scenarios.get("latency-0ms"), scenarios.get("latency-50ms")
    if at_0ms:
        m = at_0ms.find("apply")
        name = f"apply >= {TARGET_BARE_0MS}x bare at 0 ms, c={CONCURRENCY}"
        checks.append(check_ratio(name, m, TARGET_BARE_0MS, "bare"))
    if at_50ms:
        m = at_50ms.find("apply")
        name = f"apply >= {TARGET_SEQUENTIAL_50MS:g}x sequential at 50 ms, c={CONCURRENCY}"
        checks.append(check_ratio(name, m, TARGET_SEQUENTIAL_50MS, "sequential"))
    if sweep := scenarios.get("sweep-50ms"):
        for m in sweep.measurements:
            if m.client == "apply":
                name = f"apply >= {TARGET_BARE_50MS}x bare at 50 ms, c={m.concurrency}"
                checks.append(check_ratio(name, m, TARGET_BARE_50MS, "bare"))
    if limited := scenarios.get("rate-limited"):
        for m in limited.measurements:
            name = (
                f"rate-limited, --max-rps {m.max_rps:g}: goodput >= "
                f"{TARGET_GOODPUT_SHARE:.0%} of {RATE_LIMIT}/s, <= {TARGET_429_SHARE:.0%} 429s, "
                "all succeeded"
            )
            if m.error:
                checks.append(Check(name, f"no measurement: {m.error}", False))
                continue
            share = m.rate / RATE_LIMIT
            observed = (
                f"goodput {m.rate:.0f}/s = {share:.0%}, 429s {m.share_429:.1%}, "
                f"{m.succeeded}/{m.secrets} succeeded"
            )
            passed = (
                share >= TARGET_GOODPUT_SHARE
                and m.share_429 <= TARGET_429_SHARE
                and m.all_succeeded
            )
            checks.append(Check(name, observed, passed))
    checks += memory_checks(scenarios.get("memory"))
    applies = [m for s in scenarios.values() for m in s.measurements if m.client == "apply"]
    measured = [m for m in applies if m.connections is not None]
    name = f"connections <= concurrency + {EXTRA_CONNECTIONS}, every apply run"
    if not measured:
        checks.append(Check(name, "not measured", None))
    else:
        over = [
            m for m in measured if m.connections is not None and m.connections > m.connection_limit
        ]
        worst = max(measured, key=lambda m: (m.connections or 0) - m.connection_limit)
        observed = (
            f"{len(over)} of {len(measured)} runs over; closest: {worst.connections} "
            f"at c={worst.concurrency} ({worst.scenario})"
        )
        checks.append(Check(name, observed, not over))
    return checks


def memory_checks(memory: Scenario | None) -> list[Check]:
    rss_name = f"peak RSS <= {TARGET_PEAK_RSS_MIB:g} MiB at {TARGET_PEAK_RSS_ROWS:,} rows"
    growth_name = f"RSS growth < {TARGET_GROWTH_BYTES_PER_ROW:g} bytes/row (100,000 -> 1,000,000)"
    if memory is None:
        return [Check(rss_name, "not measured", None), Check(growth_name, "not measured", None)]
    checks = []
    big = next((m for m in memory.measurements if m.secrets == TARGET_PEAK_RSS_ROWS), None)
    if big is None:
        checks.append(Check(rss_name, f"{TARGET_PEAK_RSS_ROWS:,} rows not measured", None))
    elif big.peak_rss_mib is None:
        checks.append(Check(rss_name, f"no measurement: {big.error}", False))
    else:
        observed = f"{big.peak_rss_mib:.1f} MiB"
        checks.append(Check(rss_name, observed, big.peak_rss_mib <= TARGET_PEAK_RSS_MIB))
    growth = memory.extra.get("growth")
    if growth is None:
        checks.append(Check(growth_name, "needs two memory runs", None))
    else:
        per_row = float(growth["bytes_per_row"])
        observed = f"{per_row:.1f} bytes/row ({growth['from_rows']:,} -> {growth['to_rows']:,})"
        exact = (growth["from_rows"], growth["to_rows"]) == (100_000, 1_000_000)
        passed = per_row < TARGET_GROWTH_BYTES_PER_ROW if exact else None
        checks.append(Check(growth_name, observed, passed))
    return checks


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_rows(scenarios: dict[str, Scenario]) -> list[list[str]]:
    header = [
        "scenario",
        "client",
        "conc",
        "secrets",
        "rate/s",
        "wall rate/s",
        "vs bare",
        "vs seq",
        "429s",
        "conns",
        "peak RSS",
        "cpu us/req",
        "srv cpu",
    ]
    rows = [header]
    for scenario in scenarios.values():
        for m in scenario.measurements:
            client = m.client
            if m.client == "apply" and scenario.name == "rate-limited":
                client = f"apply --max-rps {m.max_rps:g}"
            if m.sampled:
                client += " (sampled)"
            if m.error:
                rows.append([scenario.name, client, str(m.concurrency), f"{m.secrets:,}"])
                rows[-1].append(f"FAILED: {m.error[:60]}")
                continue
            per_request = "-"
            if m.client_cpu_seconds is not None and m.requests:
                per_request = f"{m.client_cpu_seconds / m.requests * 1e6:.0f}"
            server_busy = "-"
            if m.server_cpu_seconds is not None and m.wall_seconds > 0:
                server_busy = f"{m.server_cpu_seconds / m.wall_seconds:.0%}"
            conns = "-" if m.connections is None else str(m.connections)
            if m.client == "apply" and m.connections is not None:
                conns += f"/{m.connection_limit}"
            rss = "-" if m.peak_rss_mib is None else f"{m.peak_rss_mib:.1f} MiB"
            secrets = f"{m.succeeded:,}" + ("" if m.all_succeeded else f" of {m.secrets:,}")
            rows.append(
                [
                    scenario.name,
                    client,
                    str(m.concurrency),
                    secrets,
                    f"{m.rate:,.0f}",
                    f"{m.wall_rate:,.0f}",
                    fmt_ratio(m.ratio_vs_bare),
                    fmt_ratio(m.ratio_vs_sequential),
                    f"{m.share_429:.1%}",
                    conns,
                    rss,
                    per_request,
                    server_busy,
                ]
            )
    return rows


def print_report(scenarios: dict[str, Scenario], checks: list[Check], settings: Settings) -> None:
    rows = table_rows(scenarios)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        if len(row) < len(widths):  # a failed run: its message runs on
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)))
        else:
            print(
                "  ".join(
                    cell.rjust(w) if i >= 2 else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        if number == 0:
            print("  ".join("-" * w for w in widths))
    print()
    legend = (
        "rate/s: secrets created per second of work, timed inside the client (sequential: its "
        "loop; bare: session open to close; apply: the summary's durationSeconds). wall rate/s: "
        "per second of the whole client process, start-up included. vs bare / vs seq: rate over "
        "the bare loop's rate at the same concurrency and latency / over the sequential rate at "
        "the same latency. cpu us/req: client CPU per HTTP request (apply's includes start-up). "
        "srv cpu: the emulator's CPU over the client's wall time (near 100%: the emulator is the "
        "bottleneck). Sequential rows are sampled. Runs of a few seconds (0 ms; 50 ms at c=256) "
        f"are repeated {settings.repeats} time(s), bare and apply in turn; the median counts."
    )
    print(textwrap.fill(legend, width=100))
    if sweep := scenarios.get("sweep-50ms"):
        print()
        print(f"sweep at {LATENCY * 1000:g} ms: ceiling = concurrency / latency")
        for point in sweep.extra.get("points", []):
            print(
                f"  c={point['concurrency']:>3}: ceiling {point['ceiling']:>6,.0f}/s  "
                f"bare {point['bare_rate']:>6,.0f}/s ({point['bare_of_ceiling']:.0%})  "
                f"apply {point['apply_rate']:>6,.0f}/s ({point['apply_of_ceiling']:.0%})"
            )
    memory = scenarios.get("memory")
    growth = memory.extra.get("growth") if memory else None
    if growth:
        print()
        print(
            f"memory: peak RSS grows {growth['bytes_per_row']:.1f} bytes/row from "
            f"{growth['from_rows']:,} to {growth['to_rows']:,} rows"
        )
    print()
    print("requests by status (from /_emulator/stats), apply runs:")
    for scenario in scenarios.values():
        for m in scenario.measurements:
            if m.client == "apply" and not m.error:
                by_status = ", ".join(f"{k}: {n:,}" for k, n in m.requests_by_status.items())
                label = f"{scenario.name} c={m.concurrency} --max-rps {m.max_rps:g}"
                print(f"  {label}: {by_status}; {m.connections} connections")
    print()
    print("targets:")
    for check in checks:
        print(f"  {check.verdict:<4}  {check.name}: {check.observed}")


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "uvloop": installed_version("uvloop"),  # bulk-secrets and bare.py use it when installed
        "bulk_secrets": importlib.metadata.version("bulk-secrets"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        "git": git_state(),
    }


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit measured, and whether bulk_secrets/ had changes not committed (read only)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10
        )
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "bulk_secrets"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {
        "commit": commit.stdout.strip() or None,
        "bulk_secrets_uncommitted": bool(changes.stdout.strip()),
    }


# --- main -----------------------------------------------------------------------------------


def parse_rows(text: str) -> tuple[int, ...]:
    try:
        rows = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if not rows or min(rows) < 1:
        raise argparse.ArgumentTypeError("row counts must be >= 1")
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark bulk-secrets apply on this machine.")
    parser.add_argument("--secrets", type=int, help="secrets per run (default 20000; quick: 300)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run: no memory")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON_OUT)
    parser.add_argument(
        "--memory-rows",
        type=parse_rows,
        help="CSV rows of the memory runs (default 10000,100000,1000000)",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs of bare and apply where a run lasts seconds; the median counts "
        f"(default {REPEATS}; quick: 1)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    secrets = args.secrets if args.secrets is not None else 300 if args.quick else 20_000
    if secrets < 1 or (args.repeats is not None and args.repeats < 1):
        raise SystemExit("--secrets and --repeats must be >= 1")
    memory_rows: tuple[int, ...] = args.memory_rows or MEMORY_ROWS
    if args.skip_memory or (args.quick and args.memory_rows is None):
        memory_rows = ()
    return Settings(
        secrets=secrets,
        quick=args.quick,
        sequential_sample=QUICK_SEQUENTIAL_SAMPLE if args.quick else SEQUENTIAL_SAMPLE,
        repeats=args.repeats if args.repeats is not None else 1 if args.quick else REPEATS,
        sweep=QUICK_SWEEP if args.quick else SWEEP,
        rate_limited_secrets=min(secrets, RATE_LIMITED_SECRETS),
        memory_rows=memory_rows,
        json_out=args.json_out,
    )


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: every emulator and client is stopped on the way


def run_all(settings: Settings, folder: Path) -> dict[str, Scenario]:
    manifests = Manifests(folder)
    scenarios: dict[str, Scenario] = {}
    scenarios["latency-0ms"] = scenario_latency("latency-0ms", 0.0, settings, manifests)
    at_50ms = scenario_latency("latency-50ms", LATENCY, settings, manifests)
    scenarios["latency-50ms"] = at_50ms
    scenarios["sweep-50ms"] = scenario_sweep(settings, manifests, at_50ms)
    scenarios["rate-limited"] = scenario_rate_limited(settings, manifests)
    if settings.memory_rows:
        scenarios["memory"] = scenario_memory(settings, folder)
    return scenarios


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(parse_args(argv))
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # A shell starts background jobs with SIGINT ignored, and children inherit an ignored
    # signal: the emulators would ignore the SIGINT that stops them. A handler is not inherited
    # (exec resets it), so with one here every child gets SIGINT's default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    machine = machine_info()
    print(
        f"bulk-secrets benchmark: {settings.secrets:,} secrets per run, "
        f"{machine['cpus_usable']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"aiohttp {machine['aiohttp']}, uvloop {machine['uvloop'] or 'not installed'}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scenarios = run_all(settings, Path(tmp))
    machine["load_average_at_end"] = os.getloadavg()
    machine["git_at_end"] = git_state()  # others may commit to bulk_secrets/ during a run
    checks = target_checks(scenarios)
    print_report(scenarios, checks, settings)
    failed = [m for s in scenarios.values() for m in s.measurements if m.error]
    record = {
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "seconds": time.perf_counter() - started,
        "scenarios": {name: scenario.to_dict() for name, scenario in scenarios.items()},
        "checks": [dataclasses.asdict(c) | {"verdict": c.verdict} for c in checks],
        "failed_runs": len(failed),
    }
    settings.json_out.parent.mkdir(parents=True, exist_ok=True)
    settings.json_out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {settings.json_out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
