"""Capped exponential backoff with full jitter, and a log-once outage tracker."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

__all__ = ["Backoff", "Outage"]


@dataclass
class Backoff:
    """Delays of ``base·2^n`` capped at ``cap``, each drawn uniformly from [delay/2, delay]."""

    base: float = 0.05
    cap: float = 5.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Outage:
    """Logs the start of an outage once and its end with the duration.

    ``failed()`` is called on every failed attempt, ``recovered()`` after a success; only the first
    failure of an episode and its end are logged.
    """

    what: str
    log: logging.Logger
    since: float | None = None
    attempts: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failure; return how long to sleep before the next attempt."""
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable (%s); retrying with backoff", self.what, _describe(exc))
        return self.backoff.next_delay()

    def recovered(self) -> float | None:
        """Record a success; return the outage's duration if one just ended."""
        if self.since is None:
            return None
        duration = time.monotonic() - self.since
        self.log.warning(
            "%s back after %.1fs (%d failed attempts)", self.what, duration, self.attempts
        )
        self.since = None
        self.attempts = 0
        self.backoff.reset()
        return duration


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
