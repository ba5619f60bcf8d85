"""Bytecodes executed per function: an exact count of the Python work a run does, where it is.

Run as a wrapper around a Python command, the way ``python -m cProfile`` is::

    python benchmarks/bytecodes.py OUT.json -m bulk_secrets apply ...
    python benchmarks/bytecodes.py OUT.json benchmarks/bare.py ...

It traces every Python frame (``sys.settrace`` with ``f_trace_opcodes``) and writes
``{"function\tpath": bytecodes}`` to ``OUT.json`` when the command ends. The run is some 30
times slower, and only Python's bytecodes are counted: the work of C code (the event loop,
aiohttp's parser, ``json``, ``csv``) is not, nor what one bytecode costs (a call costs more than
an addition). What it gives that a sampling profiler does not is a count that is the same at
every run: ``profile.py --bytecodes`` takes the difference of two runs of different sizes, per
secret, and so shows to the bytecode what a change adds or removes, and where.
"""

from __future__ import annotations

import collections
import json
import os
import runpy
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

_Tracer = Callable[[FrameType, str, Any], Any]


def counting(counts: collections.Counter[str]) -> _Tracer:
    """A ``sys.settrace`` function that counts each frame's bytecodes under its function."""

    def tracer(frame: FrameType, event: str, arg: Any) -> _Tracer:
        code = frame.f_code
        name = code.co_name
        if code.co_filename == "<string>" and "self" in frame.f_locals:
            # A method made by exec (a dataclass's __init__): named by its class.
            name = f"{type(frame.f_locals['self']).__qualname__}.{name}"
        key = f"{name}\t{code.co_filename}"
        frame.f_trace_opcodes = True

        def local(frame: FrameType, event: str, arg: Any) -> _Tracer:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    return tracer


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: bytecodes.py OUT.json (-m MODULE | SCRIPT) [ARGS...]", file=sys.stderr)
        return 2
    out, command = sys.argv[1], sys.argv[2:]
    counts: collections.Counter[str] = collections.Counter()
    status: object = 0
    if command[0] == "-m":
        sys.argv = [command[1], *command[2:]]
    else:
        sys.argv = command
        sys.path[0] = os.path.dirname(os.path.abspath(command[0]))  # as ``python SCRIPT`` does
    sys.settrace(counting(counts))
    try:
        if command[0] == "-m":
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(command[0], run_name="__main__")
    except SystemExit as exc:
        status = exc.code
    finally:
        sys.settrace(None)
        with open(out, "w", encoding="utf-8") as file:
            json.dump(counts, file)
    return status if isinstance(status, int) else 1


if __name__ == "__main__":
    sys.exit(main())
