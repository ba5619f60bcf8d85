"""Redaction by construction, and the public surface."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bulk_secrets
from bulk_secrets.manifest.document import Inline, RawEntry
from bulk_secrets.models import Action, Result, SecretSpec, SecretValue, Status, Step, Target
from bulk_secrets.report import json_line

from .helpers import CANARY


def test_secret_value_masks_itself_everywhere() -> None:
    value = SecretValue(CANARY)
    spec = SecretSpec(account="a", key_name="K", secret_id="k", value=value, location="m:1")
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", repr(spec), str(spec)):
        assert CANARY not in shown
    assert value.reveal() == CANARY
    inline = Inline(CANARY)  # a manifest's inline value is its source: masked the same
    entry = RawEntry(1, "K", inline)
    for shown in (repr(inline), str(inline), f"{inline}", repr(entry), str(entry)):
        assert CANARY not in shown
    assert inline == value and hash(inline) == hash(value) and inline.describe() == "value"


def test_records_compare_and_hash_by_value() -> None:
    """The hot path's records are plain (not frozen) dataclasses, still equal and hashable by
    value, so that sets and dict keys of them work as they did."""

    def spec() -> SecretSpec:
        return SecretSpec(
            account="a", key_name="K", secret_id="k", value=SecretValue(CANARY), location="m:1"
        )

    assert spec() == spec() and hash(spec()) == hash(spec())
    assert spec() != SecretSpec(
        account="a", key_name="K", secret_id="k", value=SecretValue("other"), location="m:1"
    )
    target = Target(account="a", key_name="K", secret_id="k", location="m:1")
    steps = {Step(target=spec(), action=Action.CREATE), Step(target=spec(), action=Action.CREATE)}
    assert len(steps) == 1 and len({target, spec()}) == 2

    def result() -> Result:
        return Result.of(target, action=Action.CREATE, status=Status.SUCCEEDED, http_status=200)

    assert {result(): 1}[result()] == 1
    assert CANARY not in repr(steps) + str(steps)


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


@given(
    text=st.text(),
    status=st.sampled_from(list(Status)),
    action=st.sampled_from(list(Action)),
    http_status=st.none() | st.integers(100, 599),
    error=st.none() | st.text(),
)
def test_json_line_is_json_dumps_of_the_record(
    text: str, status: Status, action: Action, http_status: int | None, error: str | None
) -> None:
    result = Result(
        account=text,
        key_name=text + "K",
        secret_id="x" + text,
        location=f"{text}:1",
        action=action,
        status=status,
        http_status=http_status,
        attempts=3,
        error=error,
    )
    assert json_line(result) == json.dumps(result.to_record())
