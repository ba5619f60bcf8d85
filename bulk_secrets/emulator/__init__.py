"""A local emulator of the Fireworks secrets REST API, for tests, benchmarks and ``--sandbox``.

:mod:`.server` is the HTTP side, :mod:`.store` the secrets and the API's rules, :mod:`.faults`
the fault knobs.
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
