"""The loop every list-to-list stage runs: atomic steps while there is work, a blocking wait
that holds nothing when there is none, and Redis outages waited out with backoff.

A *step* is one atomic call (a Lua script) that handles up to ``batch`` messages and returns how
many it took. When a step takes fewer than ``batch`` the input is drained and the loop calls
*wait*; the usual wait is ``wait_for_input``: ``BLMOVE in in RIGHT RIGHT pop_timeout``, a blocking
pop that pushes the message straight back where it was. It holds nothing, so it is safe to abandon
at any moment, and it wakes the stage the instant a producer pushes — a lone message goes through
in two round trips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mpush.connection import AnyRedis
from mpush.retry import Outage, keep_trying
from mpush.runtime.shutdown import Shutdown

__all__ = ["run_stage", "wait_for_input"]


async def wait_for_input(redis: AnyRedis, source: str, pop_timeout: float) -> bool:
    """Block until ``source`` holds a message or ``pop_timeout`` passes; True if one is there."""
    timeout: Any = pop_timeout  # redis-py types it int; Redis takes decimals
    found = await redis.blmove(source, source, timeout, "RIGHT", "RIGHT")
    return found is not None


async def run_stage(
    step: Callable[[], Awaitable[int]],
    wait: Callable[[], Awaitable[object]],
    *,
    batch: int,
    shutdown: Shutdown,
    outage: Outage,
) -> None:
    """Call ``step`` until shutdown, and ``wait`` whenever a step took fewer than ``batch``.

    Transient Redis errors are logged once per episode (``outage``) and retried with capped
    exponential backoff; anything else propagates and stops the service.
    """

    async def turn() -> None:
        if await step() < batch:
            await wait()

    await keep_trying(turn, outage=outage, shutdown=shutdown)
