"""The benchmark harness still runs: a smoke run, end to end, with no timing asserted.

``--smoke`` runs every scenario and every client kind (sequential, bare, apply) against real
emulator subprocesses (and one over TLS), but small and at once (see ``benchmarks/run.py``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = {
    "latency-0ms": {"sequential", "bare", "apply"},
    "latency-50ms": {"sequential", "bare", "apply"},
    "sweep-50ms": {"bare", "apply"},
    "cpu-per-secret": {"bare", "apply"},
    "tls": {"bare", "apply"},
    "rate-limited": {"apply"},
    "rate-control": {"apply"},
    "many-accounts": {"bare", "apply"},
    "memory": {"apply"},
}
# Seconds, within pytest-timeout's 120 with the 30 of the way out. A run costs about 20 s of
# CPU (some 35 processes start: emulators and clients): 10 s or more on two cores, 19 s here
# with other work on the machine.
TIMEOUT = 80


def test_smoke_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"]
    command += ["--secrets", "40", "--json-out", str(out)]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGTERM lets the harness stop its emulators and clients on the way out.
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
            raise AssertionError(f"the smoke benchmark took over {TIMEOUT}s:\n{stderr}") from None
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    assert "targets:" in stdout
    record = json.loads(out.read_text())
    assert record["failed_runs"] == 0
    assert record["machine"]["python"]
    assert set(CLIENTS) == set(record["scenarios"])
    for name in CLIENTS:
        measurements = record["scenarios"][name]["measurements"]
        assert {m["client"] for m in measurements} == CLIENTS[name], name
        for m in measurements:
            assert m["error"] is None, (name, m)
            assert m["rate"] > 0, (name, m["client"], m["concurrency"])
            assert m["succeeded"] == m["secrets"], (name, m["client"], m["concurrency"])
            assert m["requests_by_status"], (name, m["client"])
    assert record["checks"] and all(
        c["verdict"] in {"PASS", "MISS", "SKIP"} for c in record["checks"]
    )


def test_bytecodes_counts_each_function_exactly(tmp_path: Path) -> None:
    """``benchmarks/bytecodes.py`` counts what each function executes, the same at every run:
    a function called n times counts n times its one call, and the script's exit status is
    passed on."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "def step(x):\n    return x + 1\n"
        "for i in range(int(sys.argv[1])):\n    step(i)\n"
        "sys.exit(3)\n"
    )
    counts = []
    for calls in (1, 10, 10):
        out = tmp_path / f"counts-{calls}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "bytecodes.py"), str(out)]
        done = subprocess.run([*command, str(script), str(calls)], timeout=60, check=False)
        assert done.returncode == 3
        found = json.loads(out.read_text())
        counts.append(found[f"step\t{script}"])
    once, ten, again = counts
    assert once > 0
    assert ten == 10 * once
    assert again == ten


def test_the_cpu_ratio_comes_with_an_interval_that_holds_it() -> None:
    """The CPU-per-secret ratio's 90% interval (``benchmarks/cpu.py``): a seeded bootstrap
    of each client's repeats, so the same runs give the same interval, around the ratio."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cpu import ratio_interval
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    bare = [250.0, 262.0, 271.0, 240.0, 258.0]
    apply = [280.0, 301.0, 266.0, 290.0, 275.0]
    low, high = interval = ratio_interval(bare, apply) or (0.0, 0.0)
    assert low < 280.0 / 258.0 < high  # median over median
    assert low >= 266.0 / 271.0 and high <= 301.0 / 240.0
    assert ratio_interval(bare, apply) == interval
    assert ratio_interval([250.0] * 5, [275.0] * 5) == (1.1, 1.1)
    assert ratio_interval(bare[:2], apply) is None


def test_a_machine_that_moved_under_the_runs_is_said_to() -> None:
    """``benchmarks/report.py``: bare's own repeats, the same work each time, measure how far
    the machine's speed moved; past ``UNSTEADY`` the CPU ratio is printed as rough."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from report import UNSTEADY, spread
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert spread([250.0, None, 260.0, 255.0]) == 260.0 / 250.0 < UNSTEADY
    assert (spread([115.0, 231.0, 144.5]) or 0.0) > UNSTEADY
    assert spread([250.0]) is None
    assert spread([None, None]) is None
