"""The subprocesses: the emulator, and a client started through ``peak_rss.py``.

``Emulator`` starts ``python -m bulk_secrets emulator`` (over TLS: ``tls_emulator.py``) on a
free loopback port and reads its stats and CPU time; ``Setup`` is what an emulator is asked to
do (latency, rate limit, random 429s, TLS); ``Servers`` hands each run its emulator (a fresh
one, or in a smoke run a shared one); ``run_client`` runs a client (``bare.py`` or the CLI) in
a process group of its own, killed on timeout, and reads its peak RSS and CPU time;
``json_object`` reads the JSON summary a client printed; ``make_certificate`` makes the
self-signed certificate of the TLS runs.

Every process gets its event loop explicitly: the emulators ``DEFAULT_LOOP`` (through
``BULK_SECRETS_LOOP``, which ``bulk_secrets.provision.run_blocking`` honours), the clients the
loop of their run. ``MALLOC_ENV`` is the environment that spares a process glibc's mmap (or
brk) pair per socket read; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
TLS_EMULATOR = HERE / "tls_emulator.py"

HOST = "127.0.0.1"  # every server binds here, every request goes here
API_KEY = "bench-throwaway-key"  # the only key the emulators accept; it guards nothing
ACCOUNT = "bench"  # the account of every run on a fresh emulator; shared ones: bench-1, ...
EMULATOR_READY_SECONDS = 30.0
STDOUT_TAIL = 32 << 20  # bytes of a client's stdout kept: a dry run prints a line per secret
TOGETHER_SECONDS = 120.0  # how long a run waits for the runs it is to start with

LOOP_ENV = "BULK_SECRETS_LOOP"  # the CLI's (and the emulator's) event loop: asyncio or uvloop
UVLOOP_INSTALLED = importlib.util.find_spec("uvloop") is not None
DEFAULT_LOOP = "uvloop" if UVLOOP_INSTALLED else "asyncio"  # what bulk-secrets picks unforced
LOOPS = ("asyncio", "uvloop") if UVLOOP_INSTALLED else ("asyncio",)
# glibc's malloc serves a request of 128 KiB or more with mmap until a block that large is freed
# whole, which raises the threshold for good. asyncio's socket reads allocate 256 KiB and shrink
# the block to what was read, so it is never freed whole: in a process where nothing else
# raised the threshold (the bare loop), every read is an mmap, mremap and munmap. A fixed
# threshold of 1 MiB serves the reads from the heap, and a trim threshold of twice that (glibc's
# own ratio) keeps the heap from being given back and grown again (a brk pair) on every read.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "2097152"}


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


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and its private key, both PEM files."""

    cert: Path
    key: Path


def make_certificate(folder: Path) -> Certificate:
    """A self-signed certificate valid for IP 127.0.0.1 (the URL's host), made with openssl."""
    cert = Certificate(folder / "bench-cert.pem", folder / "bench-key.pem")
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(cert.key), "-out", str(cert.cert), "-days", "2",
             "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise RunFailed(f"openssl could not make a certificate: {exc}") from None
    return cert


@dataclass(frozen=True)
class Setup:
    """What an emulator is asked to do: its fault knobs, and TLS."""

    latency: float = 0.0  # seconds added to each request
    rate_limit: int = 0  # requests/s per account, with a burst of as many; 429 + Retry-After
    share_429: float = 0.0  # a random share of API requests answered 429, Retry-After: 1
    retry_after: bool = True  # False: every 429 comes without a Retry-After
    tls: Certificate | None = None  # https with this certificate

    def knobs(self) -> list[str]:
        """The emulator's flags (``bulk-secrets emulator``'s, which tls_emulator.py shares)."""
        knobs = ["--latency", f"{self.latency:g}"]
        if self.rate_limit:
            knobs += ["--rate-limit", str(self.rate_limit), "--burst", str(self.rate_limit)]
        if self.share_429:
            knobs += ["--rate-limit-share", f"{self.share_429:g}", "--seed", "1"]
        if not self.retry_after:
            knobs.append("--no-retry-after")
        return knobs

    def describe(self) -> str:
        described = f"latency {self.latency * 1000:g} ms"
        told = "Retry-After" if self.retry_after else "no Retry-After"
        if self.rate_limit:
            described += f", rate limit {self.rate_limit}/s, burst {self.rate_limit}, {told}"
        if self.share_429:
            told = "Retry-After: 1" if self.retry_after else told
            described += f", {self.share_429:.0%} random 429s ({told})"
        if self.tls:
            described += ", TLS"
        return described


def process_env(loop: str, *, malloc_tuned: bool) -> dict[str, str]:
    """This process's environment, with the event loop forced and glibc's malloc as asked."""
    env = {k: v for k, v in os.environ.items() if k != LOOP_ENV and k not in MALLOC_ENV}
    env[LOOP_ENV] = loop
    if malloc_tuned:
        env.update(MALLOC_ENV)
    return env


class Emulator:
    """``bulk-secrets emulator`` in a subprocess of its own, on a free loopback port.

    It runs on ``DEFAULT_LOOP``, whatever the client of the run does, with ``MALLOC_ENV``: the
    server is the same for every run, and no slower than it needs to be.
    """

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
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
        tls = self.setup.tls
        if tls is None:
            command = [sys.executable, "-m", "bulk_secrets", "emulator"]
        else:
            command = [sys.executable, str(TLS_EMULATOR), "--cert", str(tls.cert)]
            command += ["--cert-key", str(tls.key)]
        command += ["--host", HOST, "--port", str(port), "--key", API_KEY, *self.setup.knobs()]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=process_env(DEFAULT_LOOP, malloc_tuned=True),
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
            self.url = f"{'http' if tls is None else 'https'}://{HOST}:{port}"
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
        tls = self.setup.tls
        with local_session() as session:
            session.verify = True if tls is None else str(tls.cert)
            response = session.get(f"{self.url}/_emulator/stats", timeout=10)
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
        stats["connections"] = int(stats["connections"]) - 1
        return stats

    @property
    def pid(self) -> int | None:
        """The emulator's process id, while it runs."""
        return None if self._process is None else self._process.pid

    def pin(self, cpus: frozenset[int]) -> None:
        """Run the emulator on ``cpus`` only: each of its threads (Linux: /proc/PID/task)."""
        if self.pid is None:
            return
        for thread in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(thread), cpus)

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
        self._idle: dict[Setup, list[Emulator]] = {}
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
    def lease(self, setup: Setup, cpus: frozenset[int] | None = None) -> Iterator[Lease]:
        """An emulator for one run: a fresh one, on ``cpus`` only when given; or, when shared,
        one of the idle ones, on any CPU (a smoke run's)."""
        if not self.shared:
            with Emulator(setup) as server:
                if cpus:
                    server.pin(cpus)
                yield Lease(server, ACCOUNT, server.cpu_seconds(), None)
            return
        server = self._take(setup)
        try:
            account = f"{ACCOUNT}-{next(self._accounts)}"
            yield Lease(server, account, server.cpu_seconds(), server.stats())
        except BaseException:
            server.stop()  # whatever went wrong, the next run gets another one
            raise
        with self._lock:
            if not self._closed:
                self._idle.setdefault(setup, []).append(server)

    def _take(self, setup: Setup) -> Emulator:
        with self._lock:
            if self._closed:
                raise RunFailed("the harness is stopping")
            if idle := self._idle.get(setup):
                return idle.pop()
            server = Emulator(setup)
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


def client_env(loop: str, *, malloc_tuned: bool) -> dict[str, str]:
    env = process_env(loop, malloc_tuned=malloc_tuned)
    env = {k: v for k, v in env.items() if not k.startswith("FIREWORKS_")}
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


def run_client(
    command: Sequence[str],
    timeout: float,
    *,
    loop: str,
    malloc_tuned: bool,
    cpus: frozenset[int] | None = None,
    together: threading.Barrier | None = None,
) -> ClientRun:
    """Run a client through ``peak_rss.py``, in a process group of its own, killed on timeout,
    on ``loop`` (for the CLI, through ``BULK_SECRETS_LOOP``; bare.py is told with ``--loop``),
    with ``MALLOC_ENV`` when ``malloc_tuned``, on ``cpus`` only when given. With ``together``,
    it starts when the other runs that wait at that barrier start. Only the last
    ``STDOUT_TAIL`` bytes of its stdout are kept."""
    pinned = ["--cpus", ",".join(map(str, sorted(cpus)))] if cpus else []
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        usage_path = Path(tmp) / "usage.json"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        if together is not None:
            try:
                together.wait(TOGETHER_SECONDS)
            except threading.BrokenBarrierError:
                raise RunFailed("the run to start with did not start") from None
        with out_path.open("w") as out, err_path.open("w") as err:
            launcher = subprocess.Popen(
                [sys.executable, str(PEAK_RSS), str(usage_path), *pinned, "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=client_env(loop, malloc_tuned=malloc_tuned),
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
        stdout, stderr = read_tail(out_path), read_tail(err_path)
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


def read_tail(path: Path) -> str:
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - STDOUT_TAIL))
        return stream.read().decode("utf-8", "replace")


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
