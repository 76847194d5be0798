"""mdedupe: pass a message on only if its xid was not passed on within a window.
See docs/mdedupe.md.

Each step is one Lua script call (``lua/dedupe.lua``) that takes a batch from the input and, for
every message, computes its xid (SPEC §2: the message if it is a decimal number, else the
``meta.id`` of a JSON object, else its SHA-1) and sets a seen marker ``<seen><xid>`` with
``SET … NX PX window``: if the marker was new the message goes to the output, else it is a
duplicate, counted and dropped or pushed to the duplicates list. Markers and moves happen in one
atomic call, so kill -9 at any instant loses nothing and lets no repeat through, and replicas share
the markers.

The markers are made inside the script from the message, so Redis Cluster needs them in the queues'
slot: the seen prefix must carry their hash tag (the default ``<in>:mdedupe:seen:`` does when the
input has one), else the service refuses to start.
"""

from __future__ import annotations

from collections.abc import Mapping

from mpush.config import MdedupeSettings
from mpush.connection import AnyRedis, RedisTarget, load_lua
from mpush.errors import ConfigError
from mpush.keys import check_same_slot, hash_tag, stage_key
from mpush.runtime.runner import Context
from mpush.runtime.stage import run_stage, wait_for_input
from mpush.services.stages.common import check_key_types

__all__ = ["Mdedupe", "create"]


class Mdedupe:
    """The runnable of ``mpush mdedupe``."""

    name = "mdedupe"

    def __init__(self, settings: MdedupeSettings) -> None:
        self.settings = settings
        self.output = settings.out[0]
        self.seen = settings.seen or stage_key(settings.input, "mdedupe", "seen:")
        self.window_ms = max(1, round(settings.window * 1000))

    def registry_info(self) -> Mapping[str, str]:
        out = [self.output, *([self.settings.duplicates] if self.settings.duplicates else [])]
        return {
            "in": self.settings.input,
            "out": ",".join(out),
            "window": f"{self.settings.window:g}s",
        }

    @property
    def keys(self) -> list[str]:
        """The script's keys: input, output and, if set, the duplicates list."""
        extra = [self.settings.duplicates] if self.settings.duplicates else []
        return [self.settings.input, self.output, *extra]

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            if hash_tag(self.seen) is None:
                raise ConfigError(
                    "seen",
                    f"{self.seen!r} has no hash tag: on Redis Cluster every seen marker must hash "
                    "to the slot of in and out; give the prefix their tag, e.g. "
                    f"'{{{hash_tag(self.settings.input) or 'app'}}}:seen:'",
                )
            check_same_slot([*self.keys, self.seen], what="mdedupe's atomic move")
        await check_key_types(
            redis,
            [
                ("in", self.settings.input, "list"),
                ("out", self.output, "list"),
                *(
                    [("duplicates", self.settings.duplicates, "list")]
                    if self.settings.duplicates
                    else []
                ),
            ],
        )

    async def run(self, ctx: Context) -> None:
        script = ctx.redis.register_script(load_lua("dedupe"))
        batch = self.settings.batch
        args: list[str | int] = [batch, self.seen, self.window_ms]

        async def step() -> int:
            taken, repeats = await script(keys=self.keys, args=args)
            taken, repeats = int(taken), int(repeats)
            if taken:
                ctx.metrics.observe("dedupe", taken, timeout=batch)
                ctx.metrics.incr("dedupe", "passed", taken - repeats)
                ctx.metrics.incr("dedupe", "duplicates", repeats)
            return taken

        async def wait() -> bool:
            return await wait_for_input(ctx.redis, self.settings.input, self.settings.pop_timeout)

        await run_stage(step, wait, batch=batch, shutdown=ctx.shutdown, outage=ctx.outage)


def create(settings: MdedupeSettings) -> Mdedupe:
    return Mdedupe(settings)
