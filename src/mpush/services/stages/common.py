"""What the routing stages (mbalance, mdedupe, mthrottle) share beyond the stage loop.

- ``hold_or_wait``: the wait of a stage that may leave messages on its input on purpose (outputs at
  their cap, no tokens in the bucket). A blocking pop would return at once on a non-empty input,
  so while it holds messages the stage sleeps instead — never a hot loop.
- ``check_key_types``: refuse to start when a key the stage writes holds the wrong Redis type.
- ``consumers_alive``: whether any instance is registered under a service namespace.
"""

from __future__ import annotations

from collections.abc import Iterable

from mpush.connection import AnyRedis, reply_text
from mpush.errors import ConfigError
from mpush.keys import ServiceKeys
from mpush.runtime.shutdown import Shutdown
from mpush.runtime.stage import wait_for_input

__all__ = ["check_key_types", "consumers_alive", "hold_or_wait"]


async def hold_or_wait(
    redis: AnyRedis, source: str, *, hold: float, pop_timeout: float, shutdown: Shutdown
) -> None:
    """Sleep ``hold`` seconds when the last step held messages back, else block on ``source``."""
    if hold > 0:
        await shutdown.sleep(hold)
    else:
        await wait_for_input(redis, source, pop_timeout)


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
