"""The subprocesses: the emulator, and a client started through ``peak_rss.py``.

``Emulator`` starts ``python -m bulk_secrets emulator`` on a free loopback port and reads its
stats and CPU time; ``Servers`` hands each run its emulator (a fresh one, or in a smoke run a
shared one); ``run_client`` runs a client (``bare.py`` or the CLI) in a process group of its
own, killed on timeout, and reads its peak RSS and CPU time; ``json_object`` reads the JSON
summary a client printed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests
from measurements import Measurement, RunFailed

HERE = Path(__file__).resolve().parent
BARE = HERE / "bare.py"
PEAK_RSS = HERE / "peak_rss.py"

HOST = "127.0.0.1"  # every server binds here, every request goes here
API_KEY = "bench-throwaway-key"  # the only key the emulators accept; it guards nothing
ACCOUNT = "bench"  # the account of every run on a fresh emulator; shared ones: bench-1, ...
EMULATOR_READY_SECONDS = 30.0


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
        self._interrupted = False  # interrupt() was called: start no more

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Emulator:
        try:
            for _ in range(3):  # another program may take the free port before the emulator
                if self._interrupted:
                    raise RunFailed("the emulator was stopped as it started")
                if self._start(free_port()):
                    return self
        except BaseException:  # this harness is being stopped: stop the emulator too
            self.stop()
            raise
        raise RunFailed("the emulator did not start: " + " | ".join(self._tail))

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
        self.stop()
        return False

    def _drain(self, stream: IO[str], ready: threading.Event, settled: threading.Event) -> None:
        """Read stderr until it ends: spot the ready line, keep the last lines, never block."""
        for line in stream:
            self._tail.append(line.rstrip())
            if "emulator listening on" in line:
                ready.set()
                settled.set()
        settled.set()

    def interrupt(self) -> None:
        """Ask it to stop (SIGINT), without waiting: ``stop`` then waits. For good: if it is
        starting, it does not try again."""
        self._interrupted = True
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)

    def stop(self) -> None:
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


@dataclass(frozen=True)
class Lease:
    """One run's use of an emulator: its URL, the account to use, and its counters so far."""

    server: Emulator
    account: str
    cpu_before: float
    # The counters when the run began (a shared emulator), or None: a fresh emulator's
    # counters are the run's own.
    stats_before: dict[str, Any] | None

    @property
    def url(self) -> str:
        return self.server.url

    def fill(self, m: Measurement) -> None:
        """The run's server CPU, requests by status and connections."""
        m.server_cpu_seconds = self.server.cpu_seconds() - self.cpu_before
        stats = self.server.stats()
        requests_now = {str(k): int(n) for k, n in stats["requests"].items()}
        connections = int(stats["connections"])
        if self.stats_before is not None:
            before = {str(k): int(n) for k, n in self.stats_before["requests"].items()}
            requests_now = {
                k: n - before.get(k, 0) for k, n in requests_now.items() if n > before.get(k, 0)
            }
            # Each count has its own request's connection taken off, but the difference still
            # holds the connection of the request that read stats_before: take it off too.
            connections -= int(self.stats_before["connections"]) + 1
        m.requests_by_status = requests_now
        m.connections = connections


class Servers:
    """Where each run gets its emulator.

    Not shared (every measured run): a fresh emulator per run, stopped after it, so that the
    run starts on an empty server and the counters are its own. Shared (``--smoke``): an idle
    emulator with the same flags is taken again, each run on an account of its own (so the
    store and the per-account rate limit start empty) and the counters taken as differences;
    two runs at once never share an emulator. ``close`` stops every shared emulator, and any
    run asking for one after it fails.
    """

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, ...], list[Emulator]] = {}
        self._started: list[Emulator] = []
        self._accounts = itertools.count(1)
        self._closed = False

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def lease(self, knobs: Sequence[str]) -> Iterator[Lease]:
        if not self.shared:
            with Emulator(*knobs) as server:
                yield Lease(server, ACCOUNT, server.cpu_seconds(), None)
            return
        key = tuple(knobs)
        server = self._take(key)
        try:
            account = f"{ACCOUNT}-{next(self._accounts)}"
            yield Lease(server, account, server.cpu_seconds(), server.stats())
        except BaseException:
            server.stop()  # whatever went wrong, the next run gets another one
            raise
        with self._lock:
            if not self._closed:
                self._idle.setdefault(key, []).append(server)

    def _take(self, key: tuple[str, ...]) -> Emulator:
        with self._lock:
            if self._closed:
                raise RunFailed("the harness is stopping")
            if idle := self._idle.get(key):
                return idle.pop()
            server = Emulator(*key)
            self._started.append(server)
        server.start()  # outside the lock: emulators for runs at once start at once
        if self._closed:  # close() came while it started, and may have missed it
            server.stop()
            raise RunFailed("the harness is stopping")
        return server

    def close(self) -> None:
        with self._lock:
            self._closed = True
            started, self._started = self._started, []
            self._idle.clear()
        for server in started:  # all at once, then wait for each
            server.interrupt()
        for server in started:
            server.stop()


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


class _Clients:
    """The client launchers running now, so that runs in other threads can be stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def add(self, launcher: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.add(launcher)
            stopped = self._stopped
        if stopped:  # stop_clients came while it started
            kill_group(launcher)

    def discard(self, launcher: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(launcher)

    def stop_all(self) -> None:
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for launcher in running:
            kill_group(launcher)


_CLIENTS = _Clients()


def stop_clients() -> None:
    """Kill every client running now (in any thread), and any started from now on."""
    _CLIENTS.stop_all()


def kill_group(launcher: subprocess.Popen[bytes]) -> None:
    if launcher.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)


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
            _CLIENTS.add(launcher)
            try:
                launcher.wait(timeout=timeout)
            except BaseException as exc:  # the timeout, or this harness being stopped
                kill_group(launcher)
                launcher.wait()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise RunFailed(f"timed out after {timeout:.0f}s") from None
                raise
            finally:
                _CLIENTS.discard(launcher)
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
