"""vpush: move messages to a list on a different, remote Redis — exactly once in effect, in order.

One input list on the source Redis, one output list on the destination. Replicas elect one active
mover through a lease with a fencing token and the others stand by; the protocol (claim into an
in-flight list, deliver with dedupe and fencing, acknowledge) is ``relay``'s. This
module checks the route and wires the clients. See docs/vpush.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from mpush.config import VpushSettings
from mpush.connection import (
    AnyRedis,
    RedisTarget,
    connect,
    describe_url,
    parse_redis_url,
    reply_text,
)
from mpush.errors import ConfigError
from mpush.keys import VpushKeys, check_same_slot, key_slot
from mpush.runtime.runner import Context
from mpush.services.vpush.relay import Relay

__all__ = ["VpushService", "create"]

_CLOSE_TIMEOUT = 2.0


def create(settings: VpushSettings) -> VpushService:
    return VpushService(settings)


class VpushService:
    """The runnable of ``mpush vpush``: checks the route, then runs the mover until shutdown."""

    name = "vpush"

    def __init__(self, settings: VpushSettings) -> None:
        self.settings = settings
        self.keys = VpushKeys(settings.input, settings.out[0])
        self.out_target = parse_redis_url(
            settings.out_redis, cluster=settings.out_cluster, key="out_redis"
        )

    def registry_info(self) -> Mapping[str, str]:
        return {
            "in": self.keys.input,
            "out": self.keys.out,
            "out_redis": describe_url(self.settings.out_redis),
            "batch": str(self.settings.batch),
        }

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            _same_slot("in", self.keys.source, "source side (claim and acknowledge)")
        if self.out_target.cluster:
            keys = (self.keys.out, self.keys.dedupe("<epoch>"))
            _same_slot("out", keys, "destination side (push and dedupe)")
        expected = {
            self.keys.input: ("in", "list"),
            self.keys.inflight: ("in", "list"),
            self.keys.state: ("in", "hash"),
            self.keys.lease: ("in", "string"),
        }
        for key, (setting, wanted) in expected.items():
            kind = reply_text(await redis.type(key))
            if kind not in ("none", wanted):
                raise ConfigError(setting, f"{key!r} holds a Redis {kind}, not a {wanted}")

    async def run(self, ctx: Context) -> None:
        # The relay's own clients: each of its calls is bounded as a whole by asyncio.timeout
        # rather than per socket operation (on Python 3.11 redis-py wraps every send in a task
        # when socket_timeout is set, which costs as much as the call itself).
        timeout = self.settings.out_timeout
        source = connect(ctx.target, socket_timeout=None, connect_timeout=timeout)
        dest = connect(self.out_target, socket_timeout=None, connect_timeout=timeout)
        mover = Relay(self.settings, self.keys, ctx, source, dest)
        try:
            await mover.run()
        finally:
            await mover.close()
            for client in (source, dest):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), _CLOSE_TIMEOUT)


def _same_slot(setting: str, keys: Sequence[str], side: str) -> None:
    """ConfigError naming the keys and the fix when vpush's keys of one side span Cluster slots."""
    try:
        check_same_slot(keys, what=f"vpush's {side}")
    except ConfigError:
        named = keys[1] if setting == "in" else keys[0]  # the list the user names
        listing = ", ".join(f"{key} (slot {key_slot(key)})" for key in keys)
        raise ConfigError(
            setting,
            f"vpush's {side} needs all its keys in one Redis Cluster hash slot, but {listing}. "
            f"They are all named after the {setting} list: give it a hash tag and the rest "
            f"follows, e.g. --{setting} '{{{named}}}'",
        ) from None
