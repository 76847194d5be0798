"""The atomic move engine shared by mpush and lpush (and the stages built on it).

Each step is one Lua script call (``lua/move.lua``) that pops up to ``batch`` messages from the
input with one ``RPOP key count`` and pushes them to every output with one multi-value ``LPUSH``:
the messages never leave Redis, so a process killed at any instant loses and duplicates nothing,
and replicas can run side by side (each step is atomic, so no message is taken twice).

The loop around the steps (waiting when drained, backing off through outages) is ``stage.py``'s.

With message tracking (a namespace, see ``tracking.py``) the step is ``lua/move_tracked.lua``:
the same move plus each message's registration, in one atomic step, so a kill -9 can leave
neither a moved-but-untracked nor a tracked-but-unmoved message. The service then also runs the
tracking monitor (``monitor.py``) beside the mover.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mpush.config import MoverSettings
from mpush.connection import AnyRedis, RedisTarget, load_lua, reply_text
from mpush.errors import ConfigError
from mpush.keys import check_same_slot
from mpush.retry import Outage
from mpush.runtime.metrics import Metrics
from mpush.runtime.runner import Context
from mpush.runtime.shutdown import Shutdown
from mpush.runtime.stage import run_stage, wait_for_input
from mpush.runtime.tracking import Tracking, tracking_script
from mpush.services.movers.monitor import Monitor

__all__ = ["MoveOptions", "MoveResult", "Mover", "MoverService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveOptions:
    source: str
    targets: tuple[str, ...]
    batch: int = 1000
    capacity: int = 0
    expire: int = 0
    pop_timeout: float = 1.0
    tracking: Tracking | None = None


@dataclass(frozen=True)
class MoveResult:
    moved: int
    trimmed: int
    tracked: int = 0
    over_capacity: int = 0  # moved untracked: message_capacity ids were in flight


class Mover:
    """Moves messages from ``source`` to every target, a batch per atomic step, until shutdown."""

    def __init__(
        self, redis: AnyRedis, options: MoveOptions, metrics: Metrics, outage: Outage | None = None
    ) -> None:
        self._redis = redis
        self._outage = outage or Outage("redis", log)
        self.options = options
        self._metrics = metrics
        self._keys: Sequence[str] = (options.source, *options.targets)
        self._args: Sequence[Any] = (options.batch, options.capacity, options.expire)
        tracking = options.tracking
        if tracking is None:
            self._script = redis.register_script(load_lua("move"))
        else:
            self._script = redis.register_script(tracking_script("move_tracked"))
            self._keys = tracking.move_keys(options.source, options.targets)
            self._args = tracking.move_args(
                batch=options.batch,
                capacity=options.capacity,
                expire=options.expire,
                targets=options.targets,
            )

    async def step(self) -> MoveResult:
        """One atomic move of up to ``batch`` messages."""
        reply = await self._script(keys=self._keys, args=self._args)
        result = MoveResult(*(int(value) for value in reply))
        if result.moved:
            self._metrics.observe("move", result.moved, timeout=self.options.batch)
            self._metrics.incr("move", "trimmed", result.trimmed)
            if self.options.tracking is not None:
                self._metrics.incr("message", "tracked", result.tracked)
                self._metrics.incr("message", "over_capacity", result.over_capacity)
        return result

    async def run(self, shutdown: Shutdown) -> None:
        """Move until shutdown. Redis outages are logged once and waited out with backoff."""

        async def step() -> int:
            return (await self.step()).moved

        async def wait() -> bool:
            return await wait_for_input(self._redis, self.options.source, self.options.pop_timeout)

        await run_stage(
            step, wait, batch=self.options.batch, shutdown=shutdown, outage=self._outage
        )


class MoverService:
    """The runnable of mpush and lpush: one engine, one or several outputs."""

    def __init__(self, name: str, settings: MoverSettings) -> None:
        self.name = name
        self.settings = settings
        self.options = MoveOptions(
            source=settings.input,
            targets=tuple(settings.out),
            batch=settings.batch,
            capacity=settings.capacity,
            expire=settings.expire,
            pop_timeout=settings.pop_timeout,
            tracking=Tracking.from_settings(settings, name),
        )

    def registry_info(self) -> Mapping[str, str]:
        info = {"in": self.options.source, "out": ",".join(self.options.targets)}
        if self.options.tracking is not None:
            info["tracking"] = f"timeout {self.options.tracking.policy.timeout:g}s"
        return info

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        keys = [self.options.source, *self.options.targets]
        if target.cluster:
            check_same_slot(keys, what=f"{self.name}'s atomic move")
            if self.options.tracking is not None:
                self.options.tracking.check_slot(keys, what=f"{self.name}'s atomic move")
        for key, setting in zip(keys, ["in", *["out"] * len(self.options.targets)], strict=True):
            kind = await redis.type(key)
            kind = reply_text(kind)
            if kind not in ("none", "list"):
                raise ConfigError(setting, f"{key!r} holds a Redis {kind}, not a list")
        if self.options.tracking is not None:
            await self.options.tracking.check_types(redis)

    async def run(self, ctx: Context) -> None:
        mover = Mover(ctx.redis, self.options, ctx.metrics, ctx.outage)
        if self.options.tracking is None:
            await mover.run(ctx.shutdown)
            return
        monitor = Monitor(
            ctx.redis,
            self.options.tracking.keys,
            batch=self.options.batch,
            pop_timeout=self.options.pop_timeout,
            outage=ctx.outage,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(mover.run(ctx.shutdown))
                group.create_task(monitor.run(ctx.shutdown))
        except BaseExceptionGroup as failed:  # the runner reads the failure itself
            raise failed.exceptions[0] from None
