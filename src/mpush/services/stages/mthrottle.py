"""mthrottle: pass messages on at no more than N per period, across all replicas together.
See docs/mthrottle.md.

Each step is one Lua script call (``lua/throttle.lua``) on a token bucket kept in Redis: it refills
the bucket by Redis TIME (one clock for every replica, wherever it runs), moves as many messages as
there are whole tokens (at most a batch) and spends them, all atomically — kill -9 at any instant
loses and duplicates nothing. When messages wait and the bucket is empty, the script says when the
next token is due and the stage sleeps until then instead of spinning.

Over any span of t seconds at most ``burst + rate·t/per`` messages pass.
"""

from __future__ import annotations

from collections.abc import Mapping

from mpush.config import MthrottleSettings
from mpush.connection import AnyRedis, RedisTarget, load_lua
from mpush.keys import check_same_slot, stage_key
from mpush.runtime.runner import Context
from mpush.services.stages.common import check_key_types, run_holding_stage

__all__ = ["Mthrottle", "create"]


class Mthrottle:
    """The runnable of ``mpush mthrottle``."""

    name = "mthrottle"

    def __init__(self, settings: MthrottleSettings) -> None:
        self.settings = settings
        self.output = settings.out[0]
        self.bucket = settings.bucket or stage_key(settings.input, "mthrottle", "bucket")
        self.rate_per_ms = settings.rate / (settings.per * 1000.0)

    def registry_info(self) -> Mapping[str, str]:
        s = self.settings
        return {"in": s.input, "out": self.output, "rate": f"{s.rate}/{s.per:g}s burst {s.burst}"}

    @property
    def keys(self) -> list[str]:
        """The script's keys: input, output, bucket."""
        return [self.settings.input, self.output, self.bucket]

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            check_same_slot(self.keys, what="mthrottle's atomic move")
        await check_key_types(
            redis,
            [
                ("in", self.settings.input, "list"),
                ("out", self.output, "list"),
                ("bucket", self.bucket, "hash"),
            ],
        )

    async def run(self, ctx: Context) -> None:
        script = ctx.redis.register_script(load_lua("throttle"))
        batch = self.settings.batch
        args: list[str | int] = [batch, repr(self.rate_per_ms), self.settings.burst]
        hold = 0.0

        async def step() -> int:
            nonlocal hold
            moved, wait_ms = await script(keys=self.keys, args=args)
            moved, hold = int(moved), int(wait_ms) / 1000.0
            if moved:
                ctx.metrics.observe("throttle", moved, timeout=batch)
            if hold:
                ctx.metrics.incr("throttle", "waits")
            return moved

        await run_holding_stage(
            ctx,
            self.settings.input,
            step,
            lambda: hold,
            batch=batch,
            pop_timeout=self.settings.pop_timeout,
        )


def create(settings: MthrottleSettings) -> Mthrottle:
    return Mthrottle(settings)
