"""The benchmark harness still runs: a smoke run, end to end, with no timing asserted.

``--smoke`` runs every scenario and every client kind (sequential, bare, apply) against real
emulator subprocesses (and one over TLS), but small and at once (see ``benchmarks/run.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_secrets.cli.collector import RUN_THRESHOLD

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
    at_once = [  # the comparisons made at once: every run of them gave a measurement
        record["scenarios"]["latency-0ms"]["at_once"],
        record["scenarios"]["tls"]["at_once"]["0"],  # a smoke run: TLS at 0 ms only
        *record["scenarios"]["memory"]["chain_at_once"].values(),
    ]
    assert len(at_once) == 5
    for comparison in at_once:
        assert comparison["errors"] == [], comparison
        assert len(comparison["ratio_repeats"]) == len(comparison["bare_rates"]) >= 1


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
    """The CPU-per-secret ratio's 90% interval (``benchmarks/cpu.py``): a seeded bootstrap of
    the repeats' ratios, so the same runs give the same interval, around their median."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from together import median_interval
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ratios: list[float | None] = [1.068, 1.033, 1.034, 1.071, 1.091]
    low, high = interval = median_interval(ratios) or (0.0, 0.0)
    assert low < 1.068 < high
    assert low >= 1.033 and high <= 1.091
    assert median_interval(ratios) == interval
    assert median_interval([1.1] * 5) == (1.1, 1.1)
    assert median_interval(ratios[:2]) is None
    assert median_interval([*ratios, None]) is None  # a run failed: no interval


def test_rates_at_once_count_only_while_every_run_was_creating() -> None:
    """``timeline.overlap_rates``: from the first read at which every run had created a
    secret to the last at which none had created its last; the lone tail of the slower run
    does not count, and a stretch read too few times gives no rate."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from timeline import MIN_READS, overlap_rates
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # one read a second; fast creates 100/s from t=2 to t=42, slow 50/s from t=4, to 4,000
    fast = [(float(t), max(0, min(4000, 100 * (t - 2)))) for t in range(0, 50)]
    slow = [(float(t), max(0, min(4000, 50 * (t - 4)))) for t in range(0, 90)]
    rates = overlap_rates([fast, slow])
    assert rates == pytest.approx([100.0, 50.0])
    assert overlap_rates([fast, fast]) == pytest.approx([100.0, 100.0])
    short = [(float(t), 0 if t < MIN_READS - 5 else 10) for t in range(MIN_READS)]
    assert overlap_rates([fast, short]) is None  # they overlap over too few reads
    assert overlap_rates([fast, []]) is None  # a run never read


def test_a_timeline_reads_what_an_emulator_created_to_the_last(tmp_path: Path) -> None:
    """``timeline.Timeline`` against a real emulator: its last read, taken as it stops
    watching, holds every secret created before; its connection is one, which
    ``clients.launch_and_fill`` takes off the run's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from processes import ACCOUNT, API_KEY, Emulator, Lease, Setup, local_session
        from timeline import Timeline
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    timeline = Timeline()
    with Emulator(Setup()) as server:
        timeline.watch(1, Lease(server, ACCOUNT, 0.0, None))
        with local_session() as session:
            for index in range(5):
                body = {"keyName": f"K{index}", "value": "v"}
                created = session.post(
                    f"{server.url}/v1/accounts/{ACCOUNT}/secrets",
                    json={"name": f"accounts/{ACCOUNT}/secrets/k{index}", **body},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=10,
                )
                assert created.status_code == 200
        reads = timeline.take(1)
        timeline.close()
        assert reads[-1][1] == 5
        assert [n for _, n in reads] == sorted(n for _, n in reads)
        assert server.stats()["connections"] == 2  # the POSTs' and the timeline's


def test_the_bare_loop_sets_its_collector_as_apply_does() -> None:
    """The floor is given apply's own collector threshold (it does not import the tool)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bare import GC_THRESHOLD
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert GC_THRESHOLD == RUN_THRESHOLD


def test_the_goals_bound_by_cpu_are_judged_by_the_runs_made_at_once() -> None:
    """``targets``: the 0 ms throughput goal, c=256 at 50 ms and the linear chain are judged by
    apply's rate over bare's at once; the ratio of the runs taken in turn is only shown beside
    it, and a comparison at once that failed or could not be read is a MISS with its reason."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from measurements import Measurement, Scenario
        from targets import linear_checks, throughput_checks
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def at_0ms(at_once: dict[str, object]) -> Scenario:
        bare = Measurement("latency-0ms", "bare", 64, 0.0, 100, succeeded=100, work_seconds=1.0)
        apply = Measurement("latency-0ms", "apply", 64, 0.0, 100, succeeded=100, work_seconds=1.25)
        apply.ratio_vs_bare = 0.8  # in turn, on a machine whose speed moved
        scenario = Scenario("latency-0ms", "", [bare, apply])
        scenario.extra["at_once"] = {"errors": [], "ratio_interval": None, **at_once}
        return scenario

    def verdict_at_0ms(at_once: dict[str, object]) -> tuple[str, str]:
        check = throughput_checks({"latency-0ms": at_0ms(at_once)})[0]
        return check.verdict, check.observed

    verdict, observed = verdict_at_0ms({"ratio": 0.95, "same_ratio": 1.0})
    assert verdict == "PASS" and "0.95x bare at once" in observed and "in turn 0.80x" in observed
    assert verdict_at_0ms({"ratio": 0.85, "same_ratio": None})[0] == "MISS"
    assert verdict_at_0ms({"ratio": None, "same_ratio": None})[0] == "MISS"
    verdict, observed = verdict_at_0ms({"ratio": 0.95, "same_ratio": 1.0, "errors": ["apply: x"]})
    assert verdict == "MISS" and "apply: x" in observed

    def verdicts_at_50ms(at_once: dict[str, object] | None) -> dict[str, str]:
        """The 50 ms goals, with c=256 taken at once as ``at_once`` says (None: not run)."""
        sweep = Scenario("sweep-50ms", "")
        for concurrency in (16, 64, 256, 1024):
            bare = Measurement("sweep-50ms", "bare", concurrency, 50.0, 100, succeeded=100)
            apply = Measurement("sweep-50ms", "apply", concurrency, 50.0, 100, succeeded=100)
            apply.ratio_vs_bare = 0.91  # in turn: c=256's in a slow hour
            sweep.measurements += [bare, apply]
            point: dict[str, object] = {"concurrency": concurrency, "at_once": None}
            if concurrency == 256 and at_once is not None:
                point["at_once"] = {"errors": [], "ratio_interval": None, **at_once}
            sweep.extra.setdefault("points", []).append(point)
        checks = throughput_checks({"sweep-50ms": sweep})
        return {c.name.rpartition("c=")[2]: f"{c.verdict} {c.observed}" for c in checks}

    judged = verdicts_at_50ms({"ratio": 0.98, "same_ratio": 1.01})
    assert judged["256"].startswith("PASS 0.98x bare at once") and "in turn 0.91x" in judged["256"]
    assert judged["64"].startswith("MISS 0.91x bare")  # not judged at once: in turn counts
    assert verdicts_at_50ms({"ratio": 0.93, "same_ratio": None})["256"].startswith("MISS")
    assert verdicts_at_50ms(None)["256"].startswith("MISS 0.91x bare")

    def verdict_of_chain(ratios: list[float | None], flat: float | None) -> str:
        memory = Scenario("memory", "")
        memory.extra["linear"] = {
            "rows": [10_000, 100_000, 1_000_000],
            "ratios": ratios,
            "rate_min_over_max": flat,
            "rates_in_turn": [7_000.0, 12_000.0, 8_000.0],  # in turn: 0.58, not judged
            "bytes_per_row": [50.0, 0.2],
            "growth_ratio": 0.004,
        }
        return linear_checks(memory)[0].verdict

    assert verdict_of_chain([0.9, 0.925, 0.903], 0.9 / 0.925) == "PASS"
    assert verdict_of_chain([0.8, 0.925, 0.903], 0.8 / 0.925) == "MISS"
    assert verdict_of_chain([None, 0.925, 0.903], None) == "MISS"


def test_each_repeat_pairs_apply_with_the_bare_run_beside_it() -> None:
    """``cpu.per_secret``: a repeat's ratio is apply's CPU per secret over that of the bare
    run made at the same time; bare's runs past the repeats are the check of bare against
    bare, and count in neither bare's median nor the ratio."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cpu import per_secret
        from measurements import Measurement
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def run(client: str, secrets: int, cpu: float) -> Measurement:
        m = Measurement("cpu-per-secret", client, 64, 0.0, secrets)
        m.succeeded, m.client_cpu_seconds = secrets, cpu
        return m

    runs = {  # two repeats of bare and apply at once, then one of bare and bare
        ("bare", 10): [run("bare", 10, 1.0), run("bare", 10, 2.0), run("bare", 10, 1.0)],
        ("bare", 40): [run("bare", 40, 1.3), run("bare", 40, 2.6), run("bare", 40, 1.9)],
        ("apply", 10): [run("apply", 10, 1.0), run("apply", 10, 2.0)],
        ("apply", 40): [run("apply", 40, 1.33), run("apply", 40, 2.66)],
        ("bare 2", 10): [run("bare 2", 10, 1.0)],
        ("bare 2", 40): [run("bare 2", 40, 1.9)],
    }
    record = per_secret(runs, 10, 40, repeats=2)
    assert record["bare_us_per_secret_repeats"] == pytest.approx([1e4, 2e4])
    assert record["ratio_repeats"] == pytest.approx([1.1, 1.1])
    assert record["ratio"] == pytest.approx(1.1)
    assert record["bare_us_per_secret"] == pytest.approx(1.5e4)
    assert record["same_ratio_repeats"] == pytest.approx([1.0])
    failed = run("apply", 40, 0.0)
    failed.error = "exit 1"
    runs["apply", 40][1] = failed
    broken = per_secret(runs, 10, 40, repeats=2)
    assert broken["ratio"] is None and broken["ratio_repeats"][1] is None  # type: ignore[index]
    assert broken["apply_errors"] == ["exit 1"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="pinning is Linux's")
def test_the_launcher_pins_a_client_to_the_cpus_it_is_given(tmp_path: Path) -> None:
    """``peak_rss.py --cpus``: the client runs on those CPUs only (what CPU per secret relies
    on to put bare and apply on one core), and its usage is still recorded."""
    cpu = min(os.sched_getaffinity(0))
    usage = tmp_path / "usage.json"
    show = "import os; print(sorted(os.sched_getaffinity(0)))"
    launcher = ROOT / "benchmarks" / "peak_rss.py"
    command = [sys.executable, str(launcher), str(usage), "--cpus", str(cpu)]
    done = subprocess.run(
        [*command, "--", sys.executable, "-c", show],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"[{cpu}]"
    assert json.loads(usage.read_text())["returncode"] == 0
    unpinned = subprocess.run(
        [sys.executable, str(launcher), str(usage), "--", sys.executable, "-c", show],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert unpinned.stdout.strip() == str(sorted(os.sched_getaffinity(0)))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="pinning is Linux's")
def test_an_emulator_is_pinned_thread_by_thread() -> None:
    """``Emulator.pin``: each thread of the emulator's process runs on the CPUs given (the
    other core than the clients', in CPU per secret)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from processes import Emulator, Setup
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cpu = max(os.sched_getaffinity(0))
    with Emulator(Setup()) as server:
        pid = server.pid
        assert pid is not None
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        server.pin(frozenset({cpu}))
        assert all(os.sched_getaffinity(t) == {cpu} for t in threads)
        assert server.stats()["connections"] >= 0  # it still answers
