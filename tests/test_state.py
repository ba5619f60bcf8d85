"""The state file: shared by runs without loss (each merges its own changes under a lock),
written safely (a new 0600 temporary, never through a link), and a failed save that leaves the
file as it was."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_secrets.errors import StateSaveFailed, UsageError
from bulk_secrets.models import Action, Credentials, SecretSpec, SecretValue, Status, Step
from bulk_secrets.state import State, check_state_path

from .disks import fill
from .helpers import CANARY, ROOT

CREDENTIALS = Credentials(SecretValue("fw-test-api-key"))
A = "acct-a"


def spec(key_name: str, value: str = "v", account: str = A) -> SecretSpec:
    return SecretSpec(
        account=account,
        key_name=key_name,
        secret_id=key_name.lower(),
        location="m.yaml:1",
        value=SecretValue(value),
    )


def wrote(state: State, target: SecretSpec) -> None:
    """A write of ``target`` that succeeded: its fingerprint is set."""
    step = Step(target=target, action=Action.UPDATE, fingerprint=state.fingerprint(target))
    state.settle(step, Status.SUCCEEDED)


def deleted(state: State, target: SecretSpec) -> None:
    """A deletion of ``target`` that succeeded: its fingerprint is dropped."""
    state.settle(Step(target=target, action=Action.DELETE), Status.SUCCEEDED)


def fingerprints(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1
    return dict(data["fingerprints"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _saved_once(path: Path) -> bytes:
    first = State(path, CREDENTIALS)
    wrote(first, spec("OLD"))
    first.save()
    return path.read_bytes()


# 5. Runs that share a state file keep each other's fingerprints


def test_two_runs_saving_interleaved_keep_both_runs_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first, second = State(path, CREDENTIALS), State(path, CREDENTIALS)  # both read it empty
    wrote(first, spec("K1"))
    wrote(second, spec("K2"))
    first.save()
    second.save()
    assert set(fingerprints(path)) == {f"{A}/k1", f"{A}/k2"}
    later = State(path, CREDENTIALS)
    assert later.unchanged(spec("K1"), later.fingerprint(spec("K1")))
    assert later.unchanged(spec("K2"), later.fingerprint(spec("K2")))


def test_a_run_saves_what_it_changed_not_its_whole_view(tmp_path: Path) -> None:
    """A run that read the file before another dropped an entry does not bring it back; an
    entry both changed ends as the last save left it."""
    path = tmp_path / "state.json"
    earlier = State(path, CREDENTIALS)
    for name in ("GONE", "KEPT", "BOTH"):
        wrote(earlier, spec(name, "old"))
    earlier.save()

    slow, quick = State(path, CREDENTIALS), State(path, CREDENTIALS)
    deleted(quick, spec("GONE"))
    wrote(quick, spec("BOTH", "quick"))
    quick.save()
    wrote(slow, spec("NEW"))
    wrote(slow, spec("BOTH", "slow"))
    slow.save()

    saved = fingerprints(path)
    assert set(saved) == {f"{A}/kept", f"{A}/both", f"{A}/new"}
    assert saved[f"{A}/kept"] == earlier.fingerprint(spec("KEPT", "old"))
    assert saved[f"{A}/both"] == slow.fingerprint(spec("BOTH", "slow"))
    assert slow.unchanged(spec("KEPT", "old"), slow.fingerprint(spec("KEPT", "old")))
    assert not slow.unchanged(spec("GONE", "old"), slow.fingerprint(spec("GONE", "old")))


def test_a_run_that_changed_nothing_writes_nothing(tmp_path: Path) -> None:
    state = State(tmp_path / "state.json", CREDENTIALS)
    state.settle(Step(target=spec("K"), action=Action.CREATE), Status.NOT_ATTEMPTED)
    state.save()
    assert os.listdir(tmp_path) == []


_SAVER = """
import sys
from pathlib import Path

from bulk_secrets.models import Action, Credentials, SecretSpec, SecretValue, Status, Step
from bulk_secrets.state import State

path, account = Path(sys.argv[1]), sys.argv[2]
state = State(path, Credentials(SecretValue("fw-test-api-key")))
print("ready", flush=True)
sys.stdin.readline()  # all start at once
for i in range(300):
    spec = SecretSpec(
        account=account, key_name=f"K{i}", secret_id=f"k{i}", location="m:1",
        value=SecretValue(f"v{i}"),
    )
    step = Step(target=spec, action=Action.CREATE, fingerprint=state.fingerprint(spec))
    state.settle(step, Status.SUCCEEDED)
    state.save()
"""


def test_two_processes_saving_at_once_keep_all_600_fingerprints(tmp_path: Path) -> None:
    """Two processes save 300 fingerprints each into one file at the same time, one save per
    fingerprint: every save reads, merges and renames under the lock, so none is lost."""
    path = tmp_path / "state.json"
    savers = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path), account],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        for account in ("acct-a", "acct-b")
    ]
    try:
        for saver in savers:
            assert saver.stdout is not None and saver.stdout.readline() == "ready\n"
        for saver in savers:
            assert saver.stdin is not None
            saver.stdin.write("go\n")
            saver.stdin.close()
        for saver in savers:
            assert saver.wait(timeout=60) == 0
    finally:
        for saver in savers:
            if saver.poll() is None:
                saver.kill()
                saver.wait()
            if saver.stdout is not None:
                saver.stdout.close()
    state = State(path, CREDENTIALS)
    saved = fingerprints(path)
    assert len(saved) == 600
    for account in ("acct-a", "acct-b"):
        for i in range(300):
            each = SecretSpec(
                account=account,
                key_name=f"K{i}",
                secret_id=f"k{i}",
                location="m:1",
                value=SecretValue(f"v{i}"),
            )
            assert saved[f"{account}/k{i}"] == state.fingerprint(each)
    assert sorted(os.listdir(tmp_path)) == ["state.json", "state.json.lock"]
    assert mode(tmp_path / "state.json.lock") == 0o600


# 2. Checked before the first request


def test_a_state_file_that_could_not_be_saved_is_refused_up_front(tmp_path: Path) -> None:
    check_state_path(tmp_path / "state.json")
    with pytest.raises(UsageError, match=r"^state file .*/nope/state\.json: there is no folder"):
        check_state_path(tmp_path / "nope" / "state.json")
    with pytest.raises(UsageError, match="is a folder"):
        check_state_path(tmp_path)


# 3. Written safely


def test_a_stale_temporary_of_mode_0644_does_not_make_the_state_0644(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    stale = tmp_path / "state.json.tmp"
    stale.write_text("stale")
    stale.chmod(0o644)
    state = State(path, CREDENTIALS)
    wrote(state, spec("K"))
    state.save()
    assert mode(path) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["state.json", "state.json.lock"]


@pytest.mark.parametrize("link", ["state.json", "state.json.tmp"])
def test_a_link_is_replaced_never_written_through(tmp_path: Path, link: str) -> None:
    """A link at the state file is read through (it is a state file), then replaced; a stale
    temporary that is a link is removed. The file linked to is never written."""
    target = tmp_path / "elsewhere.json"
    before = _saved_once(target)
    (tmp_path / link).symlink_to(target)
    path = tmp_path / "state.json"
    state = State(path, CREDENTIALS)
    wrote(state, spec("K"))
    state.save()
    assert target.read_bytes() == before
    assert not path.is_symlink() and mode(path) == 0o600
    read_through = {f"{A}/old"} if link == "state.json" else set()
    assert set(fingerprints(path)) == {f"{A}/k", *read_through}


def test_a_lock_file_that_is_a_link_fails_the_save_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = State(path, CREDENTIALS)
    wrote(first, spec("OLD"))
    first.save()
    before = path.read_bytes()
    lock = tmp_path / "state.json.lock"
    lock.unlink()
    lock.symlink_to(tmp_path / "precious")
    state = State(path, CREDENTIALS)
    wrote(state, spec("NEW"))
    with pytest.raises(StateSaveFailed, match=r"its lock file .* is a symbolic link: remove it"):
        state.save()
    assert path.read_bytes() == before
    assert not (tmp_path / "precious").exists()


# 4. A failed save leaves the file as it was, and no temporary


def _fails_and_leaves(path: Path, before: bytes, reason: str) -> None:
    state = State(path, CREDENTIALS)
    wrote(state, spec("NEW", CANARY))
    with pytest.raises(StateSaveFailed) as caught:
        state.save()
    message = str(caught.value)
    assert message == f"state file {path}: cannot save it: {reason}; it is left as it was"
    assert CANARY not in message and state.fingerprint(spec("NEW", CANARY)) not in message
    assert path.read_bytes() == before
    assert not path.with_name("state.json.tmp").exists()


def test_an_io_error_leaves_the_state_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    before = _saved_once(path)

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    _fails_and_leaves(path, before, os.strerror(errno.EIO))


def test_a_full_disk_leaves_the_state_file_as_it_was(small_disk: Path) -> None:
    path = small_disk / "state.json"
    before = _saved_once(path)
    fill(small_disk)
    _fails_and_leaves(path, before, os.strerror(errno.ENOSPC))
    assert sorted(os.listdir(small_disk)) == ["filler", "state.json", "state.json.lock"]
