"""Quantities on the command line: durations as kubectl and Go write them (``90s``, ``15m``,
``1h30m``, ``500ms``; a plain number is seconds), and sizes (``512K``, ``1M``, ``2MiB``; a
plain number is bytes)."""

from __future__ import annotations

import argparse
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds, from a duration; argparse shows the error of one that is not."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration: write it as 90s, 15m or 1h30m"
            ) from None
        seconds = sum(float(number) * _SECONDS[unit] for number, unit in parts)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be more than 0")
    return seconds


_SIZE = re.compile(r"(\d+)\s*(|k|kb|kib|m|mb|mib)", re.IGNORECASE)
_BYTES = {"": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20}
_BYTES["mib"] = 1 << 20


def parse_size(text: str) -> int:
    """Bytes, from a size (K and M are 1024 and 1024 * 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write it as 1048576, 512K or 1M")
    return int(match[1]) * _BYTES[match[2].lower()]
