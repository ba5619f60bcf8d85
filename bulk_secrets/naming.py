"""Secret ids and key names: how one is derived from the other, and what each may be.

Fireworks' own client derives the secret id from the key name by lower-casing it and turning
``_`` into ``-``; resource ids allow ``a-z``, ``0-9`` and ``-``, start with a letter and are at
most 63 characters long.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 63
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_ID = re.compile(r"[a-z][a-z0-9-]*")
_ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


def secret_id_for(key_name: str) -> str:
    """``WOLFRAM_ALPHA_API_KEY`` -> ``wolfram-alpha-api-key``."""
    return key_name.lower().replace("_", "-")


def key_name_problem(key_name: str) -> str | None:
    if not key_name:
        return "keyName is empty"
    if not _KEY_NAME.fullmatch(key_name):
        return (
            f"keyName {key_name!r} is not an environment variable name "
            "(letters, digits and _, not starting with a digit)"
        )
    return None


def secret_id_problem(secret_id: str) -> str | None:
    if len(secret_id) > MAX_ID_LENGTH:
        return (
            f"secret id {secret_id[:20]!r}... is {len(secret_id)} characters, over {MAX_ID_LENGTH}"
        )
    if not _SECRET_ID.fullmatch(secret_id):
        return f"secret id {secret_id!r} is not valid (a-z, 0-9 and -, starting with a letter)"
    return None


def account_id_problem(account: str) -> str | None:
    if not account:
        return "account id is empty"
    if len(account) > MAX_ID_LENGTH or not _ACCOUNT_ID.fullmatch(account):
        return f"account id {account!r} is not valid (a-z, 0-9 and -, at most 63 characters)"
    return None
