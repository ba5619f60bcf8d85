"""The built-in sandbox: the emulator on 127.0.0.1 with a throwaway key, so that a run needs no
account and sends nothing off the machine. The emulator (aiohttp.web) loads only when used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .models import Credentials, SecretValue

SANDBOX_KEY = "sandbox-key"  # the emulator's key when it is given none
SANDBOX_ACCOUNT = "sandbox"  # the account a sandbox run targets when the manifest names none


@asynccontextmanager
async def sandbox() -> AsyncIterator[tuple[str, Credentials]]:
    """An emulator for the length of the block: its base URL and the credentials it takes."""
    from . import emulator

    config = emulator.EmulatorConfig(keys={SANDBOX_KEY: None})
    async with emulator.running_emulator(config) as server:
        yield server.base_url, Credentials(SecretValue(SANDBOX_KEY))
