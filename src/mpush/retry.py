"""Riding out Redis outages: backoff, the process-wide outage record, and the one retry loop.

Losing Redis is normal weather. Every loop that talks to Redis runs its calls through ``retrying``
(one call until it succeeds) or ``keep_trying`` (a step over and over until shutdown): a transient
error (``TransientError``: what ``mpush.connection.translated`` makes of a lost connection, a
failover, an OOM or BUSY reply) is recorded in the outage of that Redis, waited out with capped
exponential backoff and full jitter, and the call tried again; any other error propagates.

The outage record of a Redis (``outage_of``) is shared by every loop of the process that uses it:
one "unavailable" line when an outage starts, one "back after" line when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar

import redis.exceptions as rex

from mpush.connection import AnyRedis, translated
from mpush.errors import RedisUnavailableError, TransientError

__all__ = [
    "Backoff",
    "Outage",
    "Step",
    "Stopped",
    "keep_trying",
    "outage_of",
    "retrying",
    "wait_until_reachable",
]

log = logging.getLogger("mpush.outage")

T = TypeVar("T")


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
    """One Redis's outages: the start logged once, the end logged with its duration.

    Shared by every loop that uses that Redis (``outage_of``), so an episode is one warning however
    many loops notice it. Each loop keeps its own Backoff for its delays. A failure within
    ``settle`` seconds of the end of an episode continues that episode instead of starting a new
    one: a server that flaps while it comes back (a rejoining Cluster node) is one outage.
    """

    what: str
    log: logging.Logger = log
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
        """Record an answer from Redis; return the episode's duration if one just ended."""
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


_OUTAGES: dict[str, Outage] = {}


def outage_of(what: str) -> Outage:
    """The process-wide outage record of the Redis ``what`` names (``redis 10.0.0.5:6379/0``)."""
    outage = _OUTAGES.get(what)
    if outage is None:
        outage = _OUTAGES[what] = Outage(what)
    return outage


class Sleeper(Protocol):
    """What makes a retry shutdown-aware (``mpush.runtime.shutdown.Shutdown``)."""

    @property
    def requested(self) -> bool: ...

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (early) when shutdown is requested."""
        ...


class Stopped(Exception):
    """``retrying`` gave up because shutdown was requested while it waited out an outage."""


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    outage: Outage,
    shutdown: Sleeper | None = None,
    deadline: float | None = None,
    backoff: Backoff | None = None,
    on_transient: Callable[[TransientError], object] | None = None,
) -> T:
    """``call()`` until it returns; transient errors are recorded, backed off and retried.

    - ``shutdown``: a request to stop ends the wait with ``Stopped`` (the call is not retried);
    - ``deadline`` (the event loop's clock): past it, the last ``TransientError`` is raised;
    - ``on_transient``: called with each transient error before the wait (count it, give back what
      the failed call held).
    """
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    while True:
        try:
            with translated():
                result = await call()
        except TransientError as exc:
            delay = _failed(exc, outage, backoff, on_transient)
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
                delay = min(delay, remaining)
            if shutdown is None:
                await asyncio.sleep(delay)
            elif await shutdown.sleep(delay):
                raise Stopped(str(exc)) from exc
            continue
        outage.recovered()
        return result


class Step(Enum):
    """What a step of ``keep_trying`` may return besides anything else."""

    UNTOUCHED = "untouched"  # it did not reach Redis (nothing to do): no news of an outage
    DONE = "done"  # the loop's work is over: ``keep_trying`` returns


async def keep_trying(
    step: Callable[[], Awaitable[object]],
    *,
    outage: Outage,
    shutdown: Sleeper | None = None,
    every: float = 0.0,
    backoff: Backoff | None = None,
    on_transient: Callable[[TransientError], object] | None = None,
) -> None:
    """Run ``step`` until shutdown (or until it returns ``Step.DONE``): back to back, or every
    ``every`` seconds.

    A transient error is recorded in ``outage`` and the next step waits the backoff delay instead;
    any other error propagates (and stops the service). Without ``shutdown`` the loop runs until
    cancelled.
    """
    backoff = backoff or Backoff()
    delay = every
    while shutdown is None or not shutdown.requested:
        if delay > 0:
            if shutdown is None:
                await asyncio.sleep(delay)
            elif await shutdown.sleep(delay):
                return
        try:
            with translated():
                result = await step()
        except TransientError as exc:
            delay = _failed(exc, outage, backoff, on_transient)
            continue
        delay = every
        if result is Step.UNTOUCHED:
            continue
        outage.recovered()
        backoff.reset()
        if result is Step.DONE:
            return


async def wait_until_reachable(client: AnyRedis, *, what: str, within: float) -> None:
    """PING ``client`` with backoff until it answers; RedisUnavailableError after ``within`` s, or
    at once when the credentials are refused."""

    async def ping() -> None:
        try:
            await client.ping()
        except (rex.AuthenticationError, rex.AuthorizationError) as exc:
            raise RedisUnavailableError(f"{what}: authentication failed: {exc}") from exc
        except rex.RedisError as exc:  # any error reply at startup: try again until `within`
            raise TransientError(str(exc)) from exc

    deadline = asyncio.get_running_loop().time() + within
    try:
        await retrying(ping, outage=outage_of(what), deadline=deadline)
    except TransientError as exc:
        raise RedisUnavailableError(f"{what} not reachable after {within:g}s: {exc}") from exc


def _failed(
    exc: TransientError,
    outage: Outage,
    backoff: Backoff,
    on_transient: Callable[[TransientError], object] | None,
) -> float:
    """Record a transient failure; the delay before the next attempt."""
    outage.failed(exc)
    if on_transient is not None:
        on_transient(exc)
    return backoff.next_delay()


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, TransientError) and exc.__cause__ else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__
