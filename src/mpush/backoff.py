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
        return float(delay / 2 + self.rng.uniform(0, delay / 2))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Outage:
    """One Redis connection's outages, logged once at the start and once at the end.

    Shared by every loop that uses the connection, so an episode is one warning however many loops
    notice it. Each loop keeps its own Backoff for its delays. An episode ends only once the
    connection has worked for ``settle`` seconds without a failure: a server that flaps while it
    comes back (a rejoining Cluster node) is one episode, not several.
    """

    what: str
    log: logging.Logger
    settle: float = 1.0
    since: float | None = None
    failures: int = 0
    working_since: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """Record a failed attempt; the first of an episode is logged."""
        self.failures += 1
        self.working_since = None
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "%s unavailable (%s); retrying with backoff", self.what, _describe(exc)
            )

    def recovered(self, *, settled: bool = False) -> float | None:
        """Record a success. Once the connection has worked for ``settle`` seconds (or at once
        with ``settled``), end the episode, log it and return its duration; else None."""
        if self.since is None:
            return None
        now = time.monotonic()
        if self.working_since is None:
            self.working_since = now
        if not settled and now - self.working_since < self.settle:
            return None
        duration = self.working_since - self.since
        self.log.warning(
            "%s back after %.1fs (%d failed attempts)", self.what, duration, self.failures
        )
        self.since = None
        self.failures = 0
        self.working_since = None
        return duration


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
