"""Masking secrets out of text that came from elsewhere: a server's message, an aiohttp error.

A run of the text counts as a quote of a secret when it shares ``WINDOW`` characters in a row
with it, in any letter case, raw or JSON-escaped (or holds all of a secret shorter than that).
:class:`Scrubber` does the work once per secret: it keeps the hashes of every ``WINDOW``-long
run of the secret's forms, so that scrubbing a message costs time linear in the message,
whatever the secret's length. It masks too much rather than too little: a hash that two runs
share masks both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from .models import MASK

WINDOW = 6


def _lower(text: str) -> str:
    """Lower case, one character for one, so that positions still match the text."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(char.lower()[:1] or char for char in text)


def _forms(secret: str) -> set[str]:
    """The lowered ways a secret can be quoted: as it is, and JSON-escaped (both styles)."""
    escaped = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
    return {_lower(form) for form in (secret, *escaped)}


class Scrubber:
    """Masks every quote of any of the given secrets."""

    __slots__ = ("_grams", "_short")

    def __init__(self, secrets: Iterable[str]) -> None:
        grams: set[int] = set()
        short: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            for form in _forms(secret):
                if len(form) < WINDOW:
                    short.add(form)
                else:
                    grams.update(hash(form[i : i + WINDOW]) for i in range(len(form) - WINDOW + 1))
        self._grams = grams
        self._short = short

    def __bool__(self) -> bool:
        return bool(self._grams or self._short)

    def __call__(self, text: str) -> str:
        if not text or not self:
            return text
        lowered = _lower(text)
        covered = bytearray(len(text))
        grams = self._grams
        if grams:
            for i in range(len(text) - WINDOW + 1):
                if hash(lowered[i : i + WINDOW]) in grams:
                    covered[i : i + WINDOW] = b"\x01" * WINDOW
        for form in self._short:
            start = lowered.find(form)
            while start != -1:
                covered[start : start + len(form)] = b"\x01" * len(form)
                start = lowered.find(form, start + 1)
        if not any(covered):
            return text
        pieces: list[str] = []
        for i, char in enumerate(text):
            if not covered[i]:
                pieces.append(char)
            elif i == 0 or not covered[i - 1]:
                pieces.append(MASK)
        return "".join(pieces)


def scrub(text: str, *scrubbers: Scrubber) -> str:
    """The text with every scrubber applied."""
    for scrubber in scrubbers:
        text = scrubber(text)
    return text
