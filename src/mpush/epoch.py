"""Epoch timestamps as messages carry them (deadlines, send times): what counts as one."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["MAX_EPOCH", "is_epoch"]

# Epoch seconds beyond this (the year 5138) are not a time but a mistake or an attack: as an
# expiry they would be out of Redis's range.
MAX_EPOCH = 1e11


def is_epoch(value: object) -> TypeGuard[int | float]:
    """True for a finite number of epoch seconds in [0, MAX_EPOCH]."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_EPOCH  # NaN fails both comparisons
    )
