"""``run_blocking`` picks the event loop: uvloop when installed, unless ``BULK_SECRETS_LOOP``
forces one; a value it does not know is a usage error, not a silent default."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from bulk_secrets.errors import UsageError
from bulk_secrets.provision import run_blocking

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed here")


async def _loop_module() -> str:
    """The top module of the running loop's class: ``asyncio`` or ``uvloop``."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_asyncio_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULK_SECRETS_LOOP", "asyncio")
    assert run_blocking(_loop_module) == "asyncio"


@needs_uvloop
@pytest.mark.parametrize("value", ["uvloop", " UVLoop "])
def test_uvloop_when_forced(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BULK_SECRETS_LOOP", value)
    assert run_blocking(_loop_module) == "uvloop"


@pytest.mark.parametrize("value", [None, ""])
def test_uvloop_when_installed_and_not_forced(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("BULK_SECRETS_LOOP", raising=False)
    else:
        monkeypatch.setenv("BULK_SECRETS_LOOP", value)
    assert run_blocking(_loop_module) == ("uvloop" if HAS_UVLOOP else "asyncio")


def test_an_unknown_loop_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULK_SECRETS_LOOP", "trio")
    with pytest.raises(UsageError, match="BULK_SECRETS_LOOP must be asyncio or uvloop"):
        run_blocking(_loop_module)


def test_uvloop_forced_but_missing_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULK_SECRETS_LOOP", "uvloop")
    real = importlib.util.find_spec

    def without_uvloop(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "uvloop" else real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_uvloop)
    with pytest.raises(UsageError, match="uvloop is not installed"):
        run_blocking(_loop_module)
