"""What the stages (mbalance, mdedupe, mthrottle) share beyond the stage loop.

- ``run_holding_stage``: the loop of a stage that may leave messages on its input on purpose
  (outputs at their cap, no tokens in the bucket). A blocking pop would return at once on a
  non-empty input, so while it holds messages the stage sleeps instead — never a hot loop.
- ``check_key_types``: refuse to start when a key the stage writes holds the wrong Redis type.
- ``consumers_alive``: whether any instance is registered under a service namespace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from mpush.connection import AnyRedis, reply_text
from mpush.errors import ConfigError
from mpush.keys import ServiceKeys
from mpush.runtime.runner import Context
from mpush.runtime.stage import run_stage, wait_for_input

__all__ = ["check_key_types", "consumers_alive", "run_holding_stage"]


async def run_holding_stage(
    ctx: Context,
    source: str,
    step: Callable[[], Awaitable[int]],
    hold: Callable[[], float],
    *,
    batch: int,
    pop_timeout: float,
) -> None:
    """``run_stage`` whose wait sleeps ``hold()`` seconds when the last step held messages back
    (a positive value), and else blocks on ``source``."""

    async def wait() -> None:
        seconds = hold()
        if seconds > 0:
            await ctx.shutdown.sleep(seconds)
        else:
            await wait_for_input(ctx.redis, source, pop_timeout)

    await run_stage(step, wait, batch=batch, shutdown=ctx.shutdown, outage=ctx.outage)


async def check_key_types(redis: AnyRedis, keys: Iterable[tuple[str, str, str]]) -> None:
    """ConfigError naming the setting when a key exists with another type.

    ``keys``: (setting, key, expected Redis type) triples; a missing key is always fine.
    """
    for setting, key, expected in keys:
        kind = await redis.type(key)
        kind = reply_text(kind)
        if kind not in ("none", expected):
            raise ConfigError(setting, f"{key!r} holds a Redis {kind}, not a {expected}")


async def consumers_alive(redis: AnyRedis, namespace: str) -> bool:
    """True when some id on ``<ns>:service:ids`` still has its ``<ns>:service:<id>`` hash."""
    keys = ServiceKeys(namespace)
    for raw in await redis.lrange(keys.ids, 0, -1):
        instance_id = reply_text(raw)
        if await redis.exists(keys.instance(instance_id)):
            return True
    return False
