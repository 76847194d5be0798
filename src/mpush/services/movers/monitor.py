"""The tracking monitor: done reports → response-time metrics; deadlines → timeouts, retries and
dead letters (SPEC §2 "Message tracking", docs/tracking.md).

Each step is two atomic script calls: ``lua/done.lua`` takes a batch of reports off
``<ns>:message:done`` and ``lua/due.lua`` a batch of messages whose time has come off
``<ns>:message:due``. Both claim their batch inside Redis and write their metrics in the same
script, so any number of monitors (one in every tracked mover, and ``mpush monitor``) can run side
by side without counting anything twice, and a monitor killed at any instant loses nothing.

Between steps the monitor waits on the done list with the blocking wait that holds nothing, for
at most ``pop_timeout`` seconds or until the next message is due.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from mpush.config import MonitorSettings
from mpush.connection import AnyRedis, RedisTarget
from mpush.keys import MessageKeys, check_same_slot
from mpush.retry import Outage
from mpush.runtime.runner import Context
from mpush.runtime.shutdown import Shutdown
from mpush.runtime.stage import run_stage, wait_for_input
from mpush.runtime.tracking import check_key_types, tracking_script

__all__ = ["Monitor", "MonitorService", "MonitorStep"]

log = logging.getLogger(__name__)

_SHORTEST_WAIT = 0.01


@dataclass(frozen=True)
class MonitorStep:
    done: int  # reports turned into response times
    unknown: int  # reports naming no message in flight
    due: int  # messages timed out, redelivered, dead-lettered or delisted
    next_due: float | None  # seconds until the next message is due, None when none is


class Monitor:
    """Runs the done and due steps of one namespace until shutdown."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: MessageKeys,
        *,
        batch: int = 1000,
        pop_timeout: float = 1.0,
        outage: Outage | None = None,
    ) -> None:
        self._redis = redis
        self.keys = keys
        self._batch = batch
        self._pop_timeout = pop_timeout
        self._outage = outage or Outage("redis", log)
        self._done = redis.register_script(tracking_script("done"))
        self._due = redis.register_script(tracking_script("due"))
        self._done_keys = [keys.done, keys.xids, keys.due, keys.metrics("done")]
        self._due_keys = [
            keys.due,
            keys.xids,
            keys.batches,
            keys.dead,
            *(keys.metrics(name) for name in ("timeout", "failed", "retry", "dead")),
        ]
        self._next_due: float | None = None

    async def step(self) -> MonitorStep:
        """One batch of done reports, then one batch of due messages."""
        done, unknown = await self._done(keys=self._done_keys, args=[self._batch, self.keys.prefix])
        handled, wait_ms = await self._due(
            keys=self._due_keys, args=[self._batch, self.keys.prefix]
        )
        next_due = None if int(wait_ms) < 0 else int(wait_ms) / 1000
        self._next_due = next_due
        return MonitorStep(int(done), int(unknown), int(handled), next_due)

    async def run(self, shutdown: Shutdown) -> None:
        """Step until shutdown; Redis outages are logged once and waited out with backoff."""

        async def step() -> int:
            result = await self.step()
            return max(result.done + result.unknown, result.due)

        async def wait() -> bool:
            timeout = self._pop_timeout
            if self._next_due is not None:
                timeout = max(min(timeout, self._next_due), _SHORTEST_WAIT)
            return await wait_for_input(self._redis, self.keys.done, timeout)

        await run_stage(step, wait, batch=self._batch, shutdown=shutdown, outage=self._outage)


class MonitorService:
    """``mpush monitor``: the tracking monitor of a namespace as a service of its own."""

    name = "monitor"

    def __init__(self, settings: MonitorSettings) -> None:
        assert settings.service_namespace is not None  # checked by MonitorSettings
        self.settings = settings
        self.keys = MessageKeys(settings.service_namespace)

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.keys.done}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            check_same_slot(self.keys.fixed, what="the tracking monitor")
        await check_key_types(redis, self.keys)

    async def run(self, ctx: Context) -> None:
        monitor = Monitor(
            ctx.redis,
            self.keys,
            batch=self.settings.batch,
            pop_timeout=self.settings.pop_timeout,
            outage=ctx.outage,
        )
        await monitor.run(ctx.shutdown)
