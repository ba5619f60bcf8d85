"""Where the CPU of one ``apply`` goes, per secret, beside the floor of a bare aiohttp loop.

Run from the project's folder, with its virtual environment::

    .venv/bin/python benchmarks/profile.py                   # CPU per secret, then a profile
    .venv/bin/python benchmarks/profile.py --loops uvloop --repeats 1 --no-profile
    .venv/bin/python benchmarks/profile.py --no-cpu --profile-secrets 20000 --top 40
    .venv/bin/python benchmarks/profile.py --no-cpu --no-profile --instructions
    .venv/bin/python benchmarks/profile.py --no-cpu --no-profile --bytecodes --loops uvloop
    .venv/bin/python benchmarks/profile.py --no-cpu --no-profile --rss 20000,200000
    .venv/bin/python benchmarks/profile.py --compare /tmp/old-tree --instructions --no-profile

Each client runs in a process of its own, against a fresh ``python -m bulk_secrets emulator``
on 127.0.0.1 (0 ms latency) in another process, at concurrency 64:

- ``bare``: ``benchmarks/bare.py``, the floor: C workers, one ``ClientSession``, ``json.dumps``
  bodies, nothing else.
- ``tool``: ``python -m bulk_secrets apply`` of a CSV manifest of N rows (the benchmark
  harness's: ``BENCH_000001``, 46-character values), ``--max-rps 0``, a JSONL report.
- ``tool@TREE`` with ``--compare TREE``: the same CLI from another copy of the package (run in
  TREE, with TREE first on ``PYTHONPATH``), to compare a change with what it replaces.

What it measures:

1. **CPU per secret** (``--secrets A,B``, default 10000,40000): the process's CPU time (user +
   system, from ``os.wait4``) of a B-secret run less that of an A-secret run, over B - A: no
   start-up, no listing of the empty account. Each client ``--repeats`` times on each loop of
   ``--loops``, clients in turn; the median and the least of the repeats are shown, and each
   client's median over the bare loop's on the same loop. On a machine that runs other work
   this varies by tens of percent: the least is the steadiest.
2. **Instructions per secret** (``--instructions``; needs ``valgrind``): the same difference,
   of the instructions the client process executes (cachegrind's ``I refs``), for ``--small``
   sizes (default 2000,6000: under valgrind a client is some 50 times slower). Other work on
   the machine barely moves it, so it compares two versions of the code well; the client is
   then so slow that it finds every answer waiting, so it is not CPU time in another unit.
3. **A profile** (``--profile-secrets N``, default 20000): one run of each client under
   py-spy when it is installed (sampling, ``--nonblocking``), else under cProfile (which slows
   calls down, so it over-weights code that makes many small calls): the own time of each
   function per secret, the top ``--top``, and the sum per group: the tool's modules, aiohttp
   (with multidict, yarl and the like), the event loop (asyncio, uvloop, anyio), the rest.
4. **Bytecodes per secret** (``--bytecodes``): the same difference, for ``--small`` sizes, of
   the Python bytecodes each function executes, counted by ``bytecodes.py`` (on the last loop
   of ``--loops``): the total and the sum per group for each client, then the tool's ``--top``
   functions. The count is exact, the same at every run: it shows to the bytecode what a
   change adds or removes, and where. It sees no C code, nor what a bytecode costs.
5. **Peak RSS** (``--rss A,B,...``, off by default): ``apply`` of manifests of those row
   counts (on the last loop of ``--loops``), and the growth in bytes per row between sizes.

Clients run with ``MALLOC_MMAP_THRESHOLD_=1048576`` and ``MALLOC_TRIM_THRESHOLD_=2097152``
(``processes.MALLOC_ENV``): asyncio's socket reads allocate a 256 KiB buffer each, which glibc
would otherwise ``mmap`` and unmap every time, and, with the first alone, take from the heap
and give back with a ``brk`` pair every time; a cost that is the C library's, not the
program's. The tool's loop is chosen with ``BULK_SECRETS_LOOP``, the bare loop's with its
``--loop``; the emulator runs on its default. This script imports only the
standard library, so the RSS that Linux carries over into a child at ``exec`` is far below a
client's.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset import write_manifest

HERE = Path(__file__).resolve().parent
BARE = HERE / "bare.py"
HOST = "127.0.0.1"
API_KEY = "profile-throwaway-key"  # the only key the emulator accepts; it guards nothing
ACCOUNT = "bench"
CONCURRENCY = 64
READY_SECONDS = 30.0
RUN_TIMEOUT = 1800.0
TOOL_PACKAGE = "bulk_secrets"
GROUPS = ("tool", "aiohttp", "event loop", "other")
_AIOHTTP = ("aiohttp", "multidict", "yarl", "propcache", "frozenlist", "aiosignal", "aiohappy")
_LOOP = ("asyncio", "uvloop", "selectors", "anyio", "sniffio")


# --- the emulator ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """``python -m bulk_secrets emulator`` (this tree's) on a free loopback port; its URL."""
    port = _free_port()
    command = [sys.executable, "-m", TOOL_PACKAGE, "emulator", "--host", HOST]
    command += ["--port", str(port), "--key", API_KEY]
    env = {k: v for k, v in os.environ.items() if k not in ("BULK_SECRETS_LOOP", "PYTHONPATH")}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=HERE.parent,
    )
    ready = threading.Event()
    tail: collections.deque[str] = collections.deque(maxlen=20)

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line.rstrip())
            if "emulator listening on" in line:
                ready.set()
        ready.set()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        ready.wait(READY_SECONDS)
        if process.poll() is not None or not _answers(port):
            raise RuntimeError("the emulator did not start: " + " | ".join(tail))
        yield f"http://{HOST}:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        thread.join(timeout=5)


def _answers(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(f"http://{HOST}:{port}/_emulator/stats", timeout=10) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


# --- clients ---------------------------------------------------------------------------------


@dataclass
class Run:
    cpu_seconds: float
    peak_rss_kib: int
    wall_seconds: float
    stderr: str


def client_env(loop: str, tree: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    env["FIREWORKS_API_KEY"] = API_KEY
    env["NO_PROXY"] = env["no_proxy"] = HOST
    env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    env["MALLOC_TRIM_THRESHOLD_"] = "2097152"
    env["BULK_SECRETS_LOOP"] = loop
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def run_measured(command: Sequence[str], loop: str, tree: Path | None = None) -> Run:
    """Run ``command`` (in ``tree``, this project's folder by default): its own CPU time and
    peak RSS, from ``os.wait4``."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=client_env(loop, tree),
        cwd=tree or HERE.parent,  # ``-m`` puts the folder first on sys.path
    )
    timer = threading.Timer(RUN_TIMEOUT, child.kill)
    timer.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda s=s, d=d: d.append(s.read()), daemon=True)
        for s, d in ((child.stdout, out), (child.stderr, err))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    for reader in readers:
        reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait
    stderr = b"".join(err).decode(errors="replace")
    if child.returncode != 0:
        text = (b"".join(out).decode(errors="replace") + stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{command[:4]}... exited {child.returncode}: {' | '.join(text)}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(cpu, usage.ru_maxrss, time.perf_counter() - started, stderr)


@dataclass(frozen=True)
class Client:
    """``bare``, ``tool``, or ``tool@TREE``: the CLI from another copy of the package."""

    name: str
    tree: Path | None = None

    @property
    def is_bare(self) -> bool:
        return self.name == "bare"


class Clients:
    """The manifests, in one temporary folder, and a fresh emulator for every run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._manifests: dict[int, Path] = {}

    def manifest(self, count: int) -> Path:
        if count not in self._manifests:
            path = self.folder / f"secrets-{count}.csv"
            self._manifests[count] = write_manifest(path, count)
        return self._manifests[count]

    def command(self, client: Client, url: str, count: int, loop: str) -> list[str]:
        if client.is_bare:
            return [
                *(sys.executable, str(BARE), "--base-url", url, "--account", ACCOUNT),
                *("--count", str(count), "--concurrency", str(CONCURRENCY), "--loop", loop),
            ]
        return [
            *(sys.executable, "-m", TOOL_PACKAGE, "apply", str(self.manifest(count))),
            *("--account", ACCOUNT, "--base-url", url, "--concurrency", str(CONCURRENCY)),
            *("--max-rps", "0", "--retries", "8", "--output", "json"),
            *("--report", str(self.folder / "report.jsonl")),
        ]

    def run(
        self, client: Client, count: int, loop: str, wrap: Callable[[list[str]], list[str]] = list
    ) -> Run:
        """One run of ``client`` on a fresh emulator; ``wrap`` turns its command into the one
        run (under a profiler, say)."""
        if not client.is_bare:
            self.manifest(count)  # written before the emulator starts
        with emulator() as url:
            command = wrap(self.command(client, url, count, loop))
            return run_measured(command, loop, client.tree)


# --- 1. CPU per secret, 2. instructions per secret -------------------------------------------


def per_secret(
    clients: Clients,
    chosen: Sequence[Client],
    loops: Sequence[str],
    sizes: tuple[int, int],
    repeats: int,
    measure: str,
) -> None:
    """``measure``: "cpu" (us of process CPU) or "instructions" (thousands, valgrind's)."""
    small, large = sizes
    unit = "us of CPU" if measure == "cpu" else "thousand instructions"
    print(f"\n{unit} per secret: ({large} - {small} secrets), c={CONCURRENCY}, {repeats} runs")
    wrap: Callable[[list[str]], list[str]] = list
    if measure == "instructions":
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]
        valgrind += ["--cachegrind-out-file=/dev/null"]

        def wrap(command: list[str]) -> list[str]:
            return [*valgrind, *command]

    floor = chosen[0].name
    for loop in loops:
        samples: dict[Client, list[float]] = {client: [] for client in chosen}
        for _ in range(repeats):
            for client in chosen:  # taken in turn: drift hits each alike
                a, b = (_amount(clients.run(client, n, loop, wrap), measure) for n in sizes)
                samples[client].append((b - a) / (large - small))
        least = statistics.median(samples[chosen[0]])
        for client, values in samples.items():
            median = statistics.median(values)
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(
                f"  {loop:8} {client.name:24} median {median:7.1f}  least {min(values):7.1f}"
                f"  x{median / least:.3f} of {floor}   ({shown})",
                flush=True,
            )


def _amount(run: Run, measure: str) -> float:
    if measure == "cpu":
        return run.cpu_seconds * 1e6
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError("valgrind printed no instruction count")
    return int(found.group(1).replace(",", "")) / 1000


# --- 3. the profile --------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def group_of(path: str) -> str:
    parts = re.split(r"[\\/]", path)
    if TOOL_PACKAGE in parts[:-1] or path.startswith(TOOL_PACKAGE):
        return "tool"
    if any(part.startswith(_AIOHTTP) for part in parts):
        return "aiohttp"
    name = parts[-1]
    if any(p in _LOOP for p in parts) or name.startswith(("uvloop", "selectors", "_asyncio")):
        return "event loop"
    return "other"


def short(path: str) -> str:
    """The path from its package down: ``bulk_secrets/client.py``, ``aiohttp/client.py``."""
    parts = re.split(r"[\\/]", path)
    for index, part in enumerate(parts):
        if part in ("site-packages", "lib-dynload") or re.fullmatch(r"python3\.\d+", part):
            rest = parts[index + 1 :]
            if rest and rest[0] not in ("site-packages", "lib-dynload"):
                return "/".join(rest)
    if TOOL_PACKAGE in parts:
        return "/".join(parts[parts.index(TOOL_PACKAGE) :])
    return "/".join(parts[-2:])


OwnTimes = dict[str, float]  # "module:function\tpath" -> seconds


def own_times_py_spy(tool: str, clients: Clients, client: Client, count: int, loop: str) -> Run:
    rate = 200
    raw = clients.folder / "py-spy.txt"
    prefix = [tool, "record", "--format", "raw", "--function", "--nonblocking"]
    prefix += ["--rate", str(rate), "--output", str(raw), "--"]
    run = clients.run(client, count, loop, lambda command: [*prefix, *command])
    own: OwnTimes = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = re.fullmatch(r"(.*) \((.*?)(?::\d+)?\)", leaf)
        function, path = match.groups() if match else (leaf, "?")
        key = f"{short(path)}:{function}\t{path}"
        own[key] = own.get(key, 0.0) + int(samples) / rate
    return Run(run.cpu_seconds, run.peak_rss_kib, run.wall_seconds, _encode(own))


def own_times_cprofile(clients: Clients, client: Client, count: int, loop: str) -> Run:
    import pstats

    out = clients.folder / "run.prof"

    def under_cprofile(command: list[str]) -> list[str]:  # python -m cProfile -o OUT [-m] ...
        return [command[0], "-m", "cProfile", "-o", str(out), *command[1:]]

    run = clients.run(client, count, loop, under_cprofile)
    own: OwnTimes = {}
    for (path, _, function), row in pstats.Stats(str(out)).stats.items():  # type: ignore[attr-defined]
        key = f"{short(path)}:{function}\t{path}"
        own[key] = own.get(key, 0.0) + row[2]
    return Run(run.cpu_seconds, run.peak_rss_kib, run.wall_seconds, _encode(own))


def _encode(own: OwnTimes) -> str:
    return "\n".join(f"{seconds}\t{key}" for key, seconds in own.items())


def _decode(text: str) -> OwnTimes:
    times: OwnTimes = {}
    for line in text.splitlines():
        seconds, key = line.split("\t", 1)
        times[key] = float(seconds)
    return times


def profile(
    clients: Clients, chosen: Sequence[Client], loops: Sequence[str], count: int, top: int
) -> None:
    tool = py_spy()
    how = "py-spy, own time of sampled frames" if tool else "cProfile, own time (tottime)"
    for loop in loops:
        for client in chosen:
            if tool:
                run = own_times_py_spy(tool, clients, client, count, loop)
            else:
                run = own_times_cprofile(clients, client, count, loop)
            show_profile(client.name, loop, count, how, _decode(run.stderr), run, top)


def show_profile(
    client: str, loop: str, count: int, how: str, own: OwnTimes, run: Run, top: int
) -> None:
    def per(seconds: float) -> str:
        return f"{seconds / count * 1e6:.1f}"

    print(f"\nProfile: {client} on {loop}, {count} secrets ({how})")
    print(f"  process CPU (profiler's included) {per(run.cpu_seconds)} us/secret")
    print(f"  profiled {per(sum(own.values()))} us/secret, start-up included")
    groups: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
    modules: dict[str, float] = {}
    for key, seconds in own.items():
        name, path = key.split("\t", 1)
        groups[group_of(path)] += seconds
        module = name.rsplit(":", 1)[0]
        modules[module] = modules.get(module, 0.0) + seconds
    print("  by group (us/secret): " + ", ".join(f"{g} {per(s)}" for g, s in groups.items()))
    ranked = sorted(modules.items(), key=lambda item: item[1], reverse=True)
    ours = [(m, s) for m, s in ranked if m.startswith(TOOL_PACKAGE)]
    print("  tool modules (us/secret): " + ", ".join(f"{m} {per(s)}" for m, s in ours))
    print(f"  top {top} functions by own time (us/secret, group):")
    for key, seconds in sorted(own.items(), key=lambda item: item[1], reverse=True)[:top]:
        name, path = key.split("\t", 1)
        print(f"    {per(seconds):>7}  {group_of(path):10}  {name}")


# --- 4. bytecodes per secret -----------------------------------------------------------------


def bytecodes_per_secret(
    clients: Clients, chosen: Sequence[Client], loop: str, sizes: tuple[int, int], top: int
) -> None:
    small, large = sizes
    print(f"\nbytecodes per secret ({large} - {small} secrets), c={CONCURRENCY}, {loop}:")
    for client in chosen:
        counts = []
        for count in sizes:
            out = clients.folder / f"bytecodes-{count}.json"

            def traced(command: list[str], out: Path = out) -> list[str]:
                return [command[0], str(HERE / "bytecodes.py"), str(out), *command[1:]]

            clients.run(client, count, loop, traced)
            counts.append(json.loads(out.read_text(encoding="utf-8")))
        groups: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
        ours: list[tuple[float, str]] = []
        for key, amount in counts[1].items():
            per = (amount - counts[0].get(key, 0)) / (large - small)
            function, path = key.split("\t", 1)
            group = group_of(path)
            groups[group] += per
            if group == "tool":
                ours.append((per, f"{short(path)}:{function}"))
        shown = ", ".join(f"{group} {amount:.0f}" for group, amount in groups.items())
        print(f"  {client.name:24} {sum(groups.values()):7.0f}   ({shown})")
        if client.is_bare:
            continue
        for per, name in sorted(ours, reverse=True)[:top]:
            print(f"    {per:7.1f}  {name}")


# --- 5. peak RSS -----------------------------------------------------------------------------


def peak_rss(clients: Clients, chosen: Sequence[Client], rows: Sequence[int], loop: str) -> None:
    for client in chosen:
        if client.is_bare:
            continue
        print(f"\nPeak RSS of {client.name} on {loop} (0 ms, c={CONCURRENCY}, --max-rps 0):")
        previous: tuple[int, int] | None = None
        for count in rows:
            run = clients.run(client, count, loop)
            mib = run.peak_rss_kib / 1024
            line = f"  {count:>9} rows: {mib:7.1f} MiB, {run.wall_seconds:.1f}s"
            if previous is not None:
                rows_before, kib_before = previous
                growth = (run.peak_rss_kib - kib_before) * 1024 / (count - rows_before)
                line += f", {growth:.1f} B/row since {rows_before}"
            print(line, flush=True)
            previous = count, run.peak_rss_kib


def numbers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--loops", default="asyncio,uvloop", help="default: %(default)s")
    parser.add_argument("--secrets", default="10000,40000", help="CPU runs; %(default)s")
    parser.add_argument("--small", default="2000,6000", help="instruction runs; %(default)s")
    parser.add_argument("--repeats", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--profile-secrets", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rss", default="", help="row counts of peak-RSS runs: 20000,200000")
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="TREE")
    parser.add_argument("--no-bare", action="store_true", help="leave out the bare loop")
    parser.add_argument("--no-cpu", action="store_true", help="skip CPU per secret")
    parser.add_argument("--instructions", action="store_true", help="count instructions")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile")
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes")
    args = parser.parse_args()
    loops = [loop for loop in args.loops.split(",") if loop]
    chosen = [] if args.no_bare else [Client("bare")]
    chosen.append(Client("tool"))
    chosen += [Client(f"tool@{tree}", tree.resolve()) for tree in args.compare]
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind")
    with tempfile.TemporaryDirectory(prefix="bulk-secrets-profile-") as folder:
        clients = Clients(Path(folder))
        if not args.no_cpu:
            small, large = numbers(args.secrets)
            per_secret(clients, chosen, loops, (small, large), args.repeats, "cpu")
        if args.instructions:
            small, large = numbers(args.small)
            per_secret(clients, chosen, loops, (small, large), 1, "instructions")
        if args.bytecodes:
            small, large = numbers(args.small)
            bytecodes_per_secret(clients, chosen, loops[-1], (small, large), args.top)
        if not args.no_profile:
            profile(clients, chosen, loops, args.profile_secrets, args.top)
        if args.rss:
            peak_rss(clients, chosen, numbers(args.rss), loops[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
