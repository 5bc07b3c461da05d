"""Enquiry references a person can read over the phone: `K7Q-M4X-PB6`.

Eight random characters and a Luhn mod N check character, from an alphabet with no 0/O or 1/I,
so a mistyped character or two swapped neighbours are caught before any look-up. 40 random bits
make references impractical to guess or enumerate.
"""

from __future__ import annotations

import secrets

from app.core.errors import FieldError, InvalidReference

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_BASE = len(ALPHABET)
_RANDOM_LENGTH = 8


def new_reference() -> str:
    """A fresh random reference in its canonical form (no separators)."""
    bits = int.from_bytes(secrets.token_bytes(5))  # 40 bits: 8 characters of 5 bits
    body = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(_RANDOM_LENGTH))
    return body + _check_character(body)


def display(reference: str) -> str:
    """The canonical form grouped in threes for reading aloud."""
    return "-".join(reference[i : i + 3] for i in range(0, len(reference), 3))


def parse(text: str) -> str:
    """The canonical form of a reference as typed; InvalidReference if it cannot be one."""
    cleaned = "".join(ch for ch in text.upper() if ch not in " -")
    if len(cleaned) != _RANDOM_LENGTH + 1 or any(ch not in _INDEX for ch in cleaned):
        raise InvalidReference(
            "A reference has nine letters and digits, like K7Q-M4X-PB6.",
            [FieldError("not a reference", parameter="reference")],
        )
    if _check_character(cleaned[:-1]) != cleaned[-1]:
        raise InvalidReference(
            "That reference has a mistake in it: please read it out again.",
            [FieldError("check character does not match", parameter="reference")],
        )
    return cleaned


def _check_character(body: str) -> str:
    """Luhn mod N: catches every single-character error and most adjacent swaps."""
    factor, total = 2, 0
    for ch in reversed(body):
        addend = factor * _INDEX[ch]
        total += addend // _BASE + addend % _BASE
        factor = 1 if factor == 2 else 2
    return ALPHABET[(_BASE - total % _BASE) % _BASE]
