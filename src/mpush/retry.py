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
    """One Redis connection's outages: the start logged once, the end logged with its duration.

    Shared by every loop that uses the connection, so an episode is one warning however many loops
    notice it. Each loop keeps its own Backoff for its delays. A failure within ``settle`` seconds
    of the end of an episode continues that episode instead of starting a new one: a server that
    flaps while it comes back (a rejoining Cluster node) is reported as one outage.
    """

    what: str
    log: logging.Logger
    settle: float = 2.0
    since: float | None = None
    failures: int = 0
    _ended: tuple[float, float, int] | None = None  # (when, episode start, failures) of the last

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """Record a failed attempt; the first of an episode is logged."""
        self.failures += 1
        if self.since is not None:
            return
        now = time.monotonic()
        if self._ended is not None and now - self._ended[0] < self.settle:
            _, self.since, earlier = self._ended  # a flap: the same episode goes on
            self.failures += earlier
            self.log.debug(
                "%s failed again right after coming back (%s)", self.what, _describe(exc)
            )
            return
        self.since = now
        self.log.warning("%s unavailable (%s); retrying with backoff", self.what, _describe(exc))

    def recovered(self) -> float | None:
        """Record a success; return the episode's duration if one just ended (and log it)."""
        if self.since is None:
            return None
        now = time.monotonic()
        duration = now - self.since
        self.log.warning(
            "%s back after %.1fs (%d failed attempts)", self.what, duration, self.failures
        )
        self._ended = (now, self.since, self.failures)
        self.since = None
        self.failures = 0
        return duration


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
