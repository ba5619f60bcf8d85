"""Run one command; write its exit code, peak RSS, CPU time and wall time as JSON.

Usage: ``python benchmarks/peak_rss.py OUT.json [--cpus 0,1] -- COMMAND [ARG...]``. The
command inherits stdin, stdout and stderr; this script's exit code is the command's. With
``--cpus``, the command runs on those CPUs only (Linux's ``sched_setaffinity``, which the
child inherits).

Why a launcher of its own, and why ``os.wait4``:

- ``os.wait4(pid)`` returns the ``rusage`` of exactly that child once it has exited, so its
  ``ru_maxrss`` is the child's own high-water mark (Linux: KiB), read after the child is gone
  and so covering its whole life. ``getrusage(RUSAGE_CHILDREN)`` would instead be a max over
  every child ever waited for, and polling ``/proc/PID/status`` (VmHWM) can miss the growth
  after the last poll.
- Linux carries the parent's RSS into the child's ``ru_maxrss``: at ``exec`` the kernel folds
  the high-water mark of the address space being replaced (a copy of the parent's after fork,
  or the parent's own after vfork/posix_spawn) into the child's. A child of the benchmark
  harness would be charged at least the harness's RSS. This launcher is a fresh, small process
  (only the standard library, a few MiB): that floor, recorded as ``launcherRssKiB``, is well
  below what any Python client under test uses, so the number is the client's own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    out_path, argv = argv[0] if argv else "", argv[1:]
    if argv[:1] == ["--cpus"] and len(argv) > 1:
        os.sched_setaffinity(0, {int(cpu) for cpu in argv[1].split(",")})
        argv = argv[2:]
    if len(argv) < 2 or argv[0] != "--":
        print("usage: peak_rss.py OUT.json [--cpus 0,1] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    command = argv[1:]
    launcher_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    wall_seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait
    record = {
        "returncode": child.returncode,
        "peakRssKiB": usage.ru_maxrss,
        "cpuSeconds": usage.ru_utime + usage.ru_stime,
        "wallSeconds": wall_seconds,
        "launcherRssKiB": launcher_rss_kib,
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(record, out)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
