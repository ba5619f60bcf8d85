"""The ``bulk-secrets`` command line: arguments -> options -> one library call -> exit code."""

from .entry import main, main_entry

__all__ = ["main", "main_entry"]
