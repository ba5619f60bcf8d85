"""The subprocesses: the emulator, and a client started through ``peak_rss.py``.

``Emulator`` starts ``python -m bulk_secrets emulator`` on a free loopback port and reads its
stats and CPU time; ``run_client`` runs a client (``bare.py`` or the CLI) in a process group of
its own, killed on timeout, and reads its peak RSS and CPU time; ``json_object`` reads the JSON
summary a client printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
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
