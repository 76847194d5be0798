"""Taking batches of messages off a list, and a loop that serves them until shutdown.

``pop_batch`` takes up to ``count`` messages from the tail (the oldest) of a list in one round
trip, blocking up to ``block`` seconds when the list is empty: ``BLMPOP`` on Redis ≥ 7.0, else
``RPOP key count`` followed by ``BRPOP`` when nothing was there. A destructive pop suits messages
with a deadline (HTTP requests and responses): if the process dies holding them, nobody could use
them after their deadline anyway, and the waiting side answers at the deadline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions as rex

from mpush.backoff import Backoff, Outage
from mpush.connection import AnyRedis, is_transient
from mpush.runtime.shutdown import Shutdown

__all__ = ["pop_batch", "serve_batches"]

_no_blmpop: set[int] = set()


async def pop_batch(redis: AnyRedis, key: str, count: int, block: float) -> list[bytes]:
    """Up to ``count`` messages from the right of ``key``, oldest first; [] after ``block`` s."""
    wait: Any = block  # redis-py types timeouts as int; Redis takes decimals
    if id(redis) not in _no_blmpop:
        try:
            found = await redis.execute_command("BLMPOP", wait, 1, key, "RIGHT", "COUNT", count)
        except rex.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            _no_blmpop.add(id(redis))  # Redis 6.2: no BLMPOP
        else:
            return list(found[1]) if found else []
    batch: Any = await redis.rpop(key, count)
    if batch:
        return list(batch)
    one: Any = await redis.brpop([key], wait)
    return [one[1]] if one else []


async def serve_batches(
    take: Callable[[], Awaitable[list[bytes]]],
    handle: Callable[[list[bytes]], Awaitable[None]],
    *,
    shutdown: Shutdown,
    outage: Outage,
) -> None:
    """``take`` a batch and ``handle`` it, until shutdown; Redis outages waited out with backoff."""
    backoff = Backoff()
    while not shutdown.requested:
        try:
            batch = await take()
            if batch:
                await handle(batch)
            outage.recovered()
            backoff.reset()
        except Exception as exc:
            if not is_transient(exc):
                raise
            outage.failed(exc)
            await shutdown.sleep(backoff.next_delay())
