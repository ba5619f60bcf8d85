"""firectl's own configuration, so that a user of firectl needs no other: ``~/.fireworks/auth.ini``
(``api_key``, ``account_id``), or with a profile ``~/.fireworks/profiles/NAME/auth.ini``.

The file holds ``key = value`` lines, with or without a section header; ``#`` and ``;`` start
comments. It is read only where nothing closer gives the key or the account (the manifest,
``FIREWORKS_API_KEY``, ``FIREWORKS_ACCOUNT_ID``, the flags).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .models import SecretValue

_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class FirectlConfig:
    """What firectl's configuration says; both may be missing. ``path``: the file read."""

    api_key: SecretValue | None = None
    account_id: str | None = None
    path: Path | None = None


def auth_file(profile: str | None = None, home: Path | None = None) -> Path:
    """Where firectl keeps its key: the profile's file, or the default one."""
    folder = (home or Path.home()) / ".fireworks"
    if profile is None:
        return folder / "auth.ini"
    if not _PROFILE_NAME.fullmatch(profile):
        raise UsageError("the profile name is not valid (letters, digits, '.', '_', '-')")
    return folder / "profiles" / profile / "auth.ini"


def read_firectl_config(
    profile: str | None = None,
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> FirectlConfig:
    """firectl's configuration: of ``profile``, else ``$FIREWORKS_PROFILE``, else the default.
    A missing default file is no configuration; a missing profile is a usage error."""
    env = os.environ if env is None else env
    profile = profile or env.get("FIREWORKS_PROFILE") or None
    path = auth_file(profile, home)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if profile is not None:
            raise UsageError(f"profile {profile}: there is no {path}") from None
        return FirectlConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({type(exc).__name__})") from exc
    settings = _settings(text)
    key = settings.get("api_key")
    return FirectlConfig(
        api_key=SecretValue(key) if key else None,
        account_id=settings.get("account_id") or None,
        path=path,
    )


def _settings(text: str) -> dict[str, str]:
    """``key = value`` lines; section headers and comments are passed over. Never quoted back:
    a line that is not a setting may hold a key."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        name, equals, value = line.partition("=")
        if equals:
            settings[name.strip().lower()] = value.strip().strip('"').strip("'")
    return settings
