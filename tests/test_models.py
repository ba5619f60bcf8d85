"""Redaction by construction, and the public surface."""

from __future__ import annotations

import pickle

import pytest

import bulk_secrets
from bulk_secrets.models import SecretSpec, SecretValue

from .helpers import CANARY


def test_secret_value_masks_itself_everywhere() -> None:
    value = SecretValue(CANARY)
    spec = SecretSpec(account="a", key_name="K", secret_id="k", value=value, location="m:1")
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", repr(spec), str(spec)):
        assert CANARY not in shown
    assert value.reveal() == CANARY


def test_secret_value_refuses_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(SecretValue(CANARY))


def test_all_is_sorted_and_complete() -> None:
    exported = bulk_secrets.__all__
    assert exported == sorted(exported)
    assert all(hasattr(bulk_secrets, name) for name in exported)
    public = {
        name
        for name, obj in vars(bulk_secrets).items()
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith("bulk_secrets.")
    }
    assert public == set(exported)
