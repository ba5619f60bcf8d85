"""Secrets created over time, read from the emulators while runs go on at once, and each run's
rate over the time when all of them were creating.

Two clients run at once on one core (see ``together.py``) do not end together: the one that
ends first leaves the other the whole core for the rest of its run. A rate over each whole run
would credit the slower one with that lone stretch. So a :class:`Timeline` reads each
emulator's ``/_emulator/stats`` every ``INTERVAL`` while the runs go on (one keep-alive
connection each, which :func:`clients.launch_and_fill` takes off the run's connections), and
:func:`overlap_rates` counts each run's creates over the stretch when every run had created
its first secret and none had created its last.
"""

from __future__ import annotations

import os
import threading
import time

import requests
from processes import Lease, local_session

INTERVAL = 0.05  # seconds between two reads of every emulator watched
MIN_READS = 10  # reads the stretch of all creating must span, or it gives no rate

Reads = list[tuple[float, int]]  # (time.perf_counter(), secrets created so far)


class Timeline:
    """A thread that reads the count of secrets created from each emulator it watches, every
    ``INTERVAL``, from the first ``watch`` until ``close``; on ``cpus`` only when given (the
    emulators' core: not the clients')."""

    def __init__(self, cpus: frozenset[int] | None = None) -> None:
        self._cpus = cpus
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[str, requests.Session, Reads]] = {}
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, key: int, lease: Lease) -> None:
        """Read ``lease``'s emulator from now on, under ``key`` (one run's own)."""
        session = local_session()
        if lease.server.setup.tls is not None:
            session.verify = str(lease.server.setup.tls.cert)
        with self._lock:
            self._watched[key] = (f"{lease.url}/_emulator/stats", session, [])
            if self._thread is None:
                self._thread = threading.Thread(target=self._read, name="timeline", daemon=True)
                self._thread.start()

    def take(self, key: int) -> Reads:
        """Stop reading the emulator watched under ``key`` (after one last read), and its
        reads."""
        with self._lock:  # the reading thread holds it while it reads
            url, session, reads = self._watched.pop(key)
        with session:
            read(url, session, reads)
        return reads

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            watched, self._watched = self._watched, {}
        for _, session, _ in watched.values():
            session.close()

    def _read(self) -> None:
        if self._cpus:
            os.sched_setaffinity(0, self._cpus)  # this thread only
        while not self._closed.wait(INTERVAL):
            with self._lock:
                for url, session, reads in self._watched.values():
                    read(url, session, reads)


def read(url: str, session: requests.Session, reads: Reads) -> None:
    """Add the count of secrets created now to ``reads`` (nothing if the emulator does not
    answer: a read missed only makes the timeline coarser)."""
    try:
        created = session.get(url, timeout=INTERVAL * 20).json()["requests"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return
    reads.append((time.perf_counter(), int(created.get("POST 200", 0))))


def overlap_rates(runs: list[Reads]) -> list[float] | None:
    """Each run's secrets created per second from the first read at which every run had
    created one to the last read at which none had created its last; None when that stretch
    spans fewer than ``MIN_READS`` reads (or a run was never read)."""
    if not runs or not all(runs):
        return None
    started = max(next((t for t, n in reads if n > 0), float("inf")) for reads in runs)
    ended = min(max((t for t, n in reads if n < reads[-1][1]), default=0.0) for reads in runs)
    rates = []
    for reads in runs:
        inside = [(t, n) for t, n in reads if started <= t <= ended]
        if len(inside) < MIN_READS:
            return None
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        rates.append((n1 - n0) / (t1 - t0))
    return rates
