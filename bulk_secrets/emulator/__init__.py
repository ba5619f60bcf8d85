"""A local emulator of the Fireworks secrets REST API, for tests, benchmarks and ``--sandbox``.

:mod:`.server` is the HTTP side and the public entry (:class:`Emulator`,
:func:`running_emulator`, :func:`serve`), :mod:`.store` the secrets and the API's rules,
:mod:`.faults` the fault knobs. Latency and the rate limit keep time with a
:class:`bulk_secrets.clock.Clock` (``clock=``), the system clock by default.
"""

from .server import (
    DEFAULT_PAGE_SIZE,
    MAX_ID_LENGTH,
    MAX_PAGE_SIZE,
    SHUTDOWN_TIMEOUT,
    Emulator,
    EmulatorConfig,
    Faults,
    Stats,
    running_emulator,
    serve,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_ID_LENGTH",
    "MAX_PAGE_SIZE",
    "SHUTDOWN_TIMEOUT",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "Stats",
    "running_emulator",
    "serve",
]
