"""``fromCommand``: a value printed by a program (a secret manager's client).

The program is this test run's own Python (``sys.executable -c ...``): it prints a canary, exits
with a status, sleeps past a timeout, or counts its runs in a file. The tests never sleep; a
program may. Whatever a program prints, on stdout or stderr, and whatever its arguments hold,
never reaches a problem, a repr or the terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bulk_secrets.cli
import bulk_secrets.manifest as manifest_module
from bulk_secrets.errors import ManifestError, Problem, UsageError
from bulk_secrets.manifest import commands, load_manifest, load_manifests

from .helpers import CANARY

PYTHON = sys.executable
PROGRAM = os.path.basename(PYTHON)


def _yaml(path: Path, *entries: tuple[str, list[str] | str], accounts: str = "[acct-a]") -> Path:
    """A YAML manifest whose entries each take a value from a command, one line each: entry
    ``i`` stands on line ``i + 3``."""
    lines = [f"accounts: {accounts}", "secrets:"]
    for key_name, argv in entries:
        lines.append(f"  - {{keyName: {key_name}, fromCommand: {json.dumps(argv)}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


def _problems(path: Path, **options: object) -> list[Problem]:
    options.setdefault("allow_commands", True)
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], **options)  # type: ignore[arg-type]
    assert CANARY not in str(caught.value)
    return list(caught.value.problems)


def _values(path: Path, **options: object) -> dict[tuple[str, str], str]:
    options.setdefault("allow_commands", True)
    manifests = load_manifests([str(path)], **options)  # type: ignore[arg-type]
    return {(s.account, s.key_name): s.value.reveal() for s in manifests.specs()}


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "value"),
    [
        (b"v\n", "v"),
        (b"v\r\n", "v"),
        (b"v", "v"),
        (b"v\n\n", "v\n"),  # one line break is removed, no more
        (b"a\r\nb\r\n", "a\r\nb"),
        (b"  spaced \t\n", "  spaced \t"),
        (b"\n", ""),
        ("h\u00e9llo \u2713 \U0001f511\n".encode(), "h\u00e9llo \u2713 \U0001f511"),
        (
            f'{CANARY}\nline two "quoted" #hash $HOME\n'.encode(),
            f'{CANARY}\nline two "quoted" #hash $HOME',
        ),
    ],
)
def test_the_value_is_what_the_program_prints_less_one_line_break(
    tmp_path: Path, printed: bytes, value: str
) -> None:
    code = f"import sys; sys.stdout.buffer.write({printed!r})"
    path = _yaml(tmp_path / "m.yaml", ("TOKEN", _python(code)))
    assert _values(path) == {("acct-a", "TOKEN"): value}


def test_json_manifests_take_commands_too(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    entry = {"keyName": "TOKEN", "fromCommand": _python(f"print({CANARY!r})")}
    path.write_text(json.dumps({"account": "acct-a", "secrets": [entry]}), encoding="utf-8")
    assert _values(path) == {("acct-a", "TOKEN"): CANARY}


def test_a_command_runs_once_for_every_account_and_never_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run once in the first pass, whatever the accounts, the passes and the keep limit."""
    monkeypatch.setattr(manifest_module, "KEEP_LIMIT", 0)  # the second pass reads the file again
    runs = tmp_path / "runs.txt"
    code = f"open({str(runs)!r}, 'a').write('ran\\n'); print({CANARY!r})"
    path = _yaml(
        tmp_path / "m.yaml",
        ("TOKEN", _python(code)),
        ("OTHER", _python("print('other')")),
        accounts="[acct-a, acct-b, acct-c]",
    )
    manifests = load_manifests([str(path)], allow_commands=True)
    assert runs.read_text() == "ran\n"
    for _ in range(2):
        specs = [s for s in manifests.specs() if s.key_name == "TOKEN"]
        assert [s.account for s in specs] == ["acct-a", "acct-b", "acct-c"]
        assert {s.value.reveal() for s in specs} == {CANARY}
    list(manifests.targets())
    assert runs.read_text() == "ran\n"


def test_a_command_whose_accounts_are_not_targeted_does_not_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    code = f"open({str(runs)!r}, 'a').write('ran\\n')"
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [acct-a, acct-b]\nsecrets:\n"
        f"  - {{keyName: TOKEN, fromCommand: {json.dumps(_python(code))}, accounts: [acct-b]}}\n"
        '  - {keyName: OTHER, value: "x"}\n',
        encoding="utf-8",
    )
    manifests = load_manifests([str(path)], accounts=["acct-a"], allow_commands=True)
    assert [(s.account, s.key_name) for s in manifests.specs()] == [("acct-a", "OTHER")]
    assert [(t.account, t.key_name) for t in manifests.excluded()] == [("acct-b", "TOKEN")]
    assert not runs.exists()


def test_it_runs_in_the_manifests_folder_with_this_environment_and_no_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULK_SECRETS_TEST_COMMAND_ENV", "from the environment")
    folder = tmp_path / "manifests"
    folder.mkdir()
    path = _yaml(
        folder / "m.yaml",
        ("CWD", _python("import os; print(os.getcwd())")),
        ("ENV", _python("import os; print(os.environ['BULK_SECRETS_TEST_COMMAND_ENV'])")),
        ("STDIN", _python("import sys; print(repr(sys.stdin.read()))")),
    )
    values = _values(path, env={})  # env= serves fromEnv: the command has the process's own
    assert Path(values["acct-a", "CWD"]).resolve() == folder.resolve()
    assert values["acct-a", "ENV"] == "from the environment"
    assert values["acct-a", "STDIN"] == "''"


def test_values_from_commands_never_show_and_only_the_program_is_named(tmp_path: Path) -> None:
    """``validate`` lists ``command:PROGRAM``: the program's name, not its folder nor its
    arguments (which hold the canary here)."""
    path = _yaml(tmp_path / "m.yaml", ("TOKEN", _python(f"print({CANARY!r})")))
    manifests = load_manifests([str(path)], allow_commands=True)
    (target,) = manifests.targets()
    assert target.source == f"command:{PROGRAM}"
    (spec,) = manifests.specs()
    assert spec.source == f"command:{PROGRAM}"
    printed = [repr(spec), str(spec), repr(target), repr(manifests.manifests[0].warnings)]
    assert CANARY not in "\n".join(printed)


def test_an_empty_value_is_a_warning(tmp_path: Path) -> None:
    path = _yaml(tmp_path / "m.yaml", ("EMPTY", _python("pass")))
    (manifest,) = load_manifests([str(path)], allow_commands=True)
    assert [(w.line, w.message) for w in manifest.warnings] == [
        (3, f"EMPTY has an empty value: {PROGRAM!r} printed nothing")
    ]


# --- problems -------------------------------------------------------------------------------


def test_without_allow_commands_no_program_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    code = f"open({str(runs)!r}, 'a').write('ran\\n')"
    path = _yaml(tmp_path / "m.yaml", ("A", ["true"]), ("B", _python(code)))
    problems = _problems(path, allow_commands=False)
    assert [(p.line, p.message) for p in problems] == [
        (3, "fromCommand runs a program: pass --allow-commands to allow it"),
        (4, "fromCommand runs a program: pass --allow-commands to allow it"),
    ]
    assert not runs.exists()


def test_a_failing_command_is_named_with_its_status_never_its_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = f"import sys; print({CANARY!r}); print({CANARY!r}, file=sys.stderr); sys.exit(3)"
    path = _yaml(tmp_path / "m.yaml", ("GOOD", _python("print('ok')")), ("BAD", _python(code)))
    (problem,) = _problems(path)
    assert (problem.line, problem.message) == (
        4,
        f"fromCommand: {PROGRAM!r} exited with status 3",
    )
    out, err = capfd.readouterr()  # the program's stderr never reached this process's
    assert CANARY not in out + err


def test_a_command_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    path = _yaml(tmp_path / "m.yaml", ("A", _python(code)))
    (problem,) = _problems(path)
    assert problem.message == f"fromCommand: {PROGRAM!r} was killed by SIGKILL"


def test_a_command_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    code = f"import time; print({CANARY!r}, flush=True); time.sleep(600)"
    path = _yaml(tmp_path / "m.yaml", ("SLOW", _python(code)))
    (problem,) = _problems(path, command_timeout=0.2)
    assert (problem.line, problem.message) == (
        3,
        f"fromCommand: {PROGRAM!r} timed out after 0.2s; it was stopped",
    )


def test_a_program_that_is_not_found_is_not_named(tmp_path: Path) -> None:
    """A name that is no program may be a value written in the wrong place."""
    path = _yaml(tmp_path / "m.yaml", ("A", [f"{CANARY}-no-such-program", "arg"]))
    (problem,) = _problems(path)
    assert problem.line == 3
    assert problem.message.startswith("fromCommand: the program is not found")


def test_output_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.buffer.write(b'ok\\xff\\xfe')"
    path = _yaml(tmp_path / "m.yaml", ("A", _python(code)))
    (problem,) = _problems(path)
    assert problem.message == f"fromCommand: what {PROGRAM!r} printed is not UTF-8 text (byte 2)"


@pytest.mark.parametrize(
    ("printed", "ok"),
    [
        (b"x" * 10, True),
        (b"x" * 10 + b"\n", True),
        (b"x" * 10 + b"\r\n", True),
        (b"x" * 11, False),
        (b"x" * 11 + b"\n", False),
        (b"x" * 10 + b"\n\n", False),
    ],
)
def test_a_value_is_held_to_the_size_limit(tmp_path: Path, printed: bytes, ok: bool) -> None:
    code = f"import sys; sys.stdout.buffer.write({printed!r})"
    path = _yaml(tmp_path / "m.yaml", ("A", _python(code)))
    if ok:
        assert _values(path, max_value_bytes=10) == {("acct-a", "A"): "x" * 10}
    else:
        (problem,) = _problems(path, max_value_bytes=10)
        assert problem.message == (
            f"fromCommand: {PROGRAM!r} printed more than the limit of 10 bytes; it was stopped"
        )


def test_a_command_that_prints_without_end_is_stopped_with_all_it_started(
    tmp_path: Path,
) -> None:
    """Past the limit, no more is read: the program's whole process group is killed, so that
    what it started goes too. The helper it starts holds a lock on a file; the lock is free
    once the helper is gone (if it were not killed, taking it would wait past the test's
    timeout)."""
    lock = tmp_path / "lock"
    helper = (
        f"import fcntl, sys, time; f = open({str(lock)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(600)"
    )
    code = (
        "import subprocess, sys\n"
        f"helper = subprocess.Popen([sys.executable, '-c', {helper!r}], stdout=subprocess.PIPE)\n"
        "helper.stdout.readline()\n"  # the helper holds the lock
        "while True:\n"
        "    sys.stdout.write('x' * 65536)\n"
    )
    path = _yaml(tmp_path / "m.yaml", ("ENDLESS", _python(code)))
    (problem,) = _problems(path, max_value_bytes=1000)
    assert problem.message == (
        f"fromCommand: {PROGRAM!r} printed more than the limit of 1000 bytes; it was stopped"
    )
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # waits for the helper's end, not for its sleep


def test_commands_run_eight_at_a_time(tmp_path: Path) -> None:
    """Nine commands, each counted in while it runs. Each of the first eight waits for all
    eight to run, then a moment (of its own) for a ninth to join: with eight at a time, none
    does, and the ninth runs once one of them has ended."""
    counter = tmp_path / "counter.json"
    counter.write_text('{"started": 0, "running": 0, "peak": 0}')
    code = (
        "import fcntl, json, time\n"
        "def update(step):\n"
        f"    with open({str(counter)!r}, 'r+') as f:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX)\n"
        "        state = json.load(f)\n"
        "        state['started'] += max(step, 0)\n"
        "        state['running'] += step\n"
        "        state['peak'] = max(state['peak'], state['running'])\n"
        "        f.seek(0); f.truncate(); json.dump(state, f)\n"
        "        return state\n"
        "state = update(1)\n"
        "give_up = time.monotonic() + 60\n"  # fewer than eight at a time: fail, not hang
        "while state['started'] < 9 and state['peak'] < 8 and time.monotonic() < give_up:\n"
        "    time.sleep(0.01); state = update(0)\n"
        "grace = time.monotonic() + 0.3\n"  # for a ninth to join, were it allowed to
        "while state['started'] < 9 and time.monotonic() < grace:\n"
        "    time.sleep(0.01); state = update(0)\n"
        "update(-1)\n"
        "print('done')\n"
    )
    path = _yaml(tmp_path / "m.yaml", *[(f"K_{i}", _python(code)) for i in range(9)])
    assert set(_values(path).values()) == {"done"}
    assert json.loads(counter.read_text()) == {"started": 9, "running": 0, "peak": 8}
    assert commands.MAX_PARALLEL == 8


def test_commands_of_every_manifest_are_checked_together(tmp_path: Path) -> None:
    first = _yaml(tmp_path / "a.yaml", ("A", _python("import sys; sys.exit(4)")))
    second = tmp_path / "b.json"
    entries = [
        {"keyName": "B", "fromCommand": _python("print('b')")},
        {"keyName": "C", "fromCommand": _python("import sys; sys.exit(5)")},
    ]
    second.write_text(
        '{"account": "acct-a", "secrets": [\n'
        + ",\n".join(json.dumps(entry) for entry in entries)
        + "\n]}\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(first), str(second)], allow_commands=True)
    assert [(p.path, p.line, p.message[-8:]) for p in caught.value.problems] == [
        (str(first), 3, "status 4"),
        (str(second), 3, "status 5"),
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            f'"op read op://vault/{CANARY}"',
            "fromCommand must be a list, [program, arg, ...]: it runs without a shell",
        ),
        ("[]", "fromCommand is empty: give at least the program"),
        ('[""]', "the program of fromCommand is empty"),
        ("[op, 123]", "an item of fromCommand would be read as int, not text"),
        ("[op, [read]]", "an item of fromCommand must be text, not a list"),
        ("{program: op}", "fromCommand must be a list"),
        ('[op, "a\\0b"]', "an item of fromCommand holds a NUL character"),
    ],
)
def test_fromcommand_must_be_a_list_of_text(tmp_path: Path, written: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"account: acct-a\nsecrets:\n  - keyName: A\n    fromCommand: {written}\n")
    (problem,) = _problems(path)
    assert problem.line == 4
    assert problem.message.startswith(message)


def test_one_source_only(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        'account: acct-a\nsecrets:\n  - keyName: A\n    value: "x"\n    fromCommand: [op]\n'
    )
    (problem,) = _problems(path)
    assert (problem.line, problem.message) == (5, "give one of value or fromCommand, not both")


def test_a_csv_manifest_runs_no_program(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,fromCommand\nA,op\n")
    problems = _problems(path, accounts=["acct-a"])
    assert [(p.line, p.column) for p in problems] == [(1, "fromCommand"), (1, None)]
    assert problems[0].message.startswith("a CSV manifest cannot run programs")
    assert problems[1].message.startswith("the header needs exactly one of the columns")


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_the_timeout_must_be_positive(tmp_path: Path, timeout: float) -> None:
    path = _yaml(tmp_path / "m.yaml", ("A", ["true"]))
    with pytest.raises(UsageError, match="the command timeout"):
        load_manifest(path, allow_commands=True, command_timeout=timeout)


def test_an_interrupted_check_starts_no_more_programs() -> None:
    """Once stopped (Ctrl-C during the check), a program that starts is stopped at once."""
    running = commands._Running()
    running.stop_all()
    process = subprocess.Popen(
        [PYTHON, "-c", "import time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    with pytest.raises(commands.Failed, match="interrupted"):
        running.add(process)
    assert process.wait() < 0  # killed, not ended by itself
    assert process.stdout is not None
    process.stdout.close()


def test_the_cli_refuses_commands_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs.txt"
    code = f"open({str(runs)!r}, 'a').write('ran'); print({CANARY!r})"
    path = _yaml(tmp_path / "m.yaml", ("TOKEN", _python(code)))
    status = bulk_secrets.cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert status == 2
    assert f"{path}:3: error: fromCommand runs a program: pass --allow-commands" in err
    assert CANARY not in out + err
    assert not runs.exists()


@pytest.mark.parametrize("at_once", [1, 3, 256])
def test_each_command_value_goes_to_its_own_entry_among_inline_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_once: int
) -> None:
    """Specs are made a few entries at a time, in C where every one of them is inline; a value
    printed by a command still goes to its own entry, whichever group it falls in."""
    monkeypatch.setattr(manifest_module, "_SPECS_AT_ONCE", at_once)
    lines = ["accounts: [acct-a]", "secrets:"]
    for i in range(8):
        if i % 3 == 1:
            argv = json.dumps(_python(f"print('from-command-{i}')"))
            lines.append(f"  - {{keyName: K_{i}, fromCommand: {argv}}}")
        else:
            lines.append(f"  - {{keyName: K_{i}, value: inline-{i}}}")
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifests = load_manifests([str(path)], allow_commands=True)
    specs = [(s.key_name, s.location, s.value.reveal()) for s in manifests.specs()]
    assert specs == [
        (f"K_{i}", f"{path}:{i + 3}", f"from-command-{i}" if i % 3 == 1 else f"inline-{i}")
        for i in range(8)
    ]
