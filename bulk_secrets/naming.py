"""Secret ids and key names: how one is derived from the other, and what each may be.

Fireworks' own client derives the secret id from the key name by lower-casing it and turning
``_`` into ``-``; resource ids allow ``a-z``, ``0-9`` and ``-``, start with a letter and are at
most 63 characters long.

A problem never quotes the name it is about unless the name is valid: text that is not a valid
name may be a value shifted into the place of one (a CSV row with an unquoted comma, a mapping
written backwards), and a value is never printed.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 63
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_ID = re.compile(r"[a-z][a-z0-9-]*")
_ACCOUNT_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
KEY_NAME_RULE = "letters, digits and _, not starting with a digit"
SECRET_ID_RULE = f"a-z, 0-9 and -, starting with a letter, at most {MAX_ID_LENGTH} characters"
ACCOUNT_ID_RULE = f"a-z, 0-9 and -, at most {MAX_ID_LENGTH} characters"


def secret_id_for(key_name: str) -> str:
    """``WOLFRAM_ALPHA_API_KEY`` -> ``wolfram-alpha-api-key``."""
    return key_name.lower().replace("_", "-")


def is_variable_name(name: str) -> bool:
    """Whether ``name`` is an environment variable name of at most 63 characters: the names a
    problem may quote (a keyName, a ``fromEnv`` variable)."""
    return len(name) <= MAX_ID_LENGTH and _KEY_NAME.fullmatch(name) is not None


def key_name_problem(key_name: str) -> str | None:
    """What is wrong with a keyName, without quoting it (it is not valid: it may be a value)."""
    if not key_name:
        return "keyName is empty"
    if not _KEY_NAME.fullmatch(key_name):
        return f"keyName is not an environment variable name ({KEY_NAME_RULE})"
    return None


def secret_id_problem(secret_id: str, *, key_name: str | None = None) -> str | None:
    """What is wrong with a secret id, without quoting it unless it was derived from a valid
    ``key_name`` (then both are quoted: they are names)."""
    if len(secret_id) > MAX_ID_LENGTH:
        what = "the secret id derived from keyName" if key_name else "the id"
        return f"{what} is {len(secret_id)} characters, over {MAX_ID_LENGTH}"
    if not _SECRET_ID.fullmatch(secret_id):
        if key_name and is_variable_name(key_name):
            return (
                f"keyName {key_name!r} gives the secret id {secret_id!r}, which is not valid "
                f"({SECRET_ID_RULE}): give an id"
            )
        return f"the id is not a valid secret id ({SECRET_ID_RULE})"
    return None


def is_account_id(account: str) -> bool:
    return len(account) <= MAX_ID_LENGTH and _ACCOUNT_ID.fullmatch(account) is not None


def account_id_problem(account: str) -> str | None:
    """What is wrong with an account id, without quoting it (it is not valid: it may be a
    value)."""
    if not account:
        return "an account id is empty"
    if not is_account_id(account):
        return f"an account id is not valid ({ACCOUNT_ID_RULE})"
    return None
