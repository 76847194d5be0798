"""A lease in Redis with a fencing token: at most one active holder among replicas.

The lease is a string ``"<token> <owner>"`` with a PX expiry. Acquiring it increments a counter
that outlives every lease, so each holder gets a larger *fencing token* than every holder before
it. The holder renews the lease well within its TTL (``hold``); when the holder dies, the lease
expires and a standby acquires it with the next token.

A lease alone cannot stop a holder that was paused (GC, SIGSTOP, a long network stall) from acting
after it expired: every write it makes must therefore carry the token, and the place written to
must refuse tokens lower than the highest it has seen. That check lives next to the data it
protects (for vpush, in the destination's Lua script).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mpush.connection import AnyRedis, load_lua, reply_text
from mpush.retry import Backoff, Outage, Step, keep_trying

__all__ = ["Lease", "LeaseState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseState:
    """The answer of one acquisition attempt."""

    acquired: bool
    token: int = 0  # ours, when acquired
    wait: float = 0.0  # seconds until the holder's lease expires, when not acquired
    holder: str = ""  # "<token> <owner>" of the holder, when not acquired


class Lease:
    """One replica's view of a lease: acquire, renew, release, and a renewing heartbeat."""

    def __init__(
        self,
        redis: AnyRedis,
        key: str,
        counter: str,
        *,
        owner: str,
        ttl: float,
        field: str = "token",
    ) -> None:
        self._redis = redis
        self.key = key
        self._counter = counter
        self._field = field
        self.owner = owner
        self.ttl = ttl
        self._acquire = redis.register_script(load_lua("lease_acquire"))
        self._renew = redis.register_script(load_lua("lease_renew"))
        self._release = redis.register_script(load_lua("lease_release"))
        self.token: int | None = None

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def acquire(self, floor: int = 0) -> LeaseState:
        """Take the lease if it is free; the token is at least ``floor``."""
        reply = await self._acquire(
            keys=[self.key, self._counter], args=[self.owner, self._ttl_ms, self._field, floor]
        )
        if int(reply[0]) == 1:
            self.token = int(reply[1])
            return LeaseState(acquired=True, token=self.token)
        self.token = None
        pttl = int(reply[1])
        wait = self.ttl if pttl < 0 else pttl / 1000
        return LeaseState(acquired=False, wait=wait, holder=reply_text(reply[2]))

    async def renew(self) -> bool:
        """Extend our lease; False when it expired or another token holds it now."""
        if self.token is None:
            return False
        return int(await self._renew(keys=[self.key], args=[self.token, self._ttl_ms])) == 1

    async def release(self) -> bool:
        """Give the lease up at once so a standby takes over; False if it was not ours."""
        if self.token is None:
            return False
        token, self.token = self.token, None
        return int(await self._release(keys=[self.key], args=[token])) == 1

    async def hold(self, lost: asyncio.Event, outage: Outage) -> None:
        """Renew every ttl/3 until cancelled; set ``lost`` and return when the lease is gone.

        A renewal that cannot reach Redis is retried with backoff (logged through ``outage``);
        each attempt is bounded by half the TTL, so a stalled connection does not hide the
        lease's expiry.
        """
        interval = self.ttl / 3

        async def renew() -> Step | None:
            async with asyncio.timeout(self.ttl / 2):
                if await self.renew():
                    return None
            log.warning("lease %s lost (token %s): standing down", self.key, self.token)
            self.token = None
            lost.set()
            return Step.DONE

        await keep_trying(renew, outage=outage, every=interval, backoff=Backoff(cap=interval))
