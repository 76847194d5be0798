"""mbalance: move each message to the work queue (of a set) that is least full.
See docs/mbalance.md.

Each step is one Lua script call (``lua/balance.lua``) that reads the outputs' lengths, picks an
output for every message of a batch — the lowest length / weight, ties round-robin through a
cursor kept in Redis so replicas share it — and pushes, all atomically: kill -9 at any instant loses
and duplicates nothing. Outputs at their cap are skipped; when all are, messages wait on the input
(back pressure) and the stage sleeps a little between tries instead of spinning.

An output given as ``QUEUE=NAMESPACE`` is skipped while no instance is registered under
``NAMESPACE``. That check runs here, every ``live_check`` seconds, outside the script, and its
result is passed to the script in ARGV: a consumer namespace may then live in any Cluster slot
(registrations are single-key and liveness changes at the pace of registration expiry, so a
second's staleness costs nothing), while the script touches only keys of the queues' slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from mpush.config import MbalanceSettings
from mpush.connection import AnyRedis, RedisTarget, load_lua
from mpush.keys import check_same_slot, stage_key
from mpush.retry import Backoff
from mpush.runtime.runner import Context
from mpush.services.stages.common import check_key_types, consumers_alive, run_holding_stage

__all__ = ["Mbalance", "create"]

log = logging.getLogger(__name__)


class Mbalance:
    """The runnable of ``mpush mbalance``."""

    name = "mbalance"

    def __init__(self, settings: MbalanceSettings) -> None:
        self.settings = settings
        self.outputs = settings.outputs()
        self.cursor = settings.cursor or stage_key(settings.input, "mbalance", "cursor")
        self._live = [True] * len(self.outputs)
        self._next_check = 0.0
        self._hold = Backoff(base=0.01, cap=0.2)
        self._holding = False

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.settings.input, "out": ",".join(out.queue for out in self.outputs)}

    @property
    def keys(self) -> list[str]:
        """The script's keys: input, cursor, outputs."""
        return [self.settings.input, self.cursor, *(out.queue for out in self.outputs)]

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            check_same_slot(self.keys, what="mbalance's atomic move")
        await check_key_types(
            redis,
            [
                ("in", self.settings.input, "list"),
                ("cursor", self.cursor, "string"),
                *(("out", out.queue, "list") for out in self.outputs),
            ],
        )

    async def run(self, ctx: Context) -> None:
        script = ctx.redis.register_script(load_lua("balance"))
        batch = self.settings.batch
        loop = asyncio.get_running_loop()

        async def step() -> int:
            if loop.time() >= self._next_check:
                await self._check_consumers(ctx.redis)
                self._next_check = loop.time() + self.settings.live_check
            args: list[float | int | str] = [batch]
            for out, live in zip(self.outputs, self._live, strict=True):
                args += [out.weight, out.cap, 1 if live else 0]
            moved, held, *counts = await script(keys=self.keys, args=args)
            self._account(ctx, int(moved), bool(held), counts)
            return int(moved)

        def hold() -> float:
            return self._hold.next_delay() if self._holding else 0.0

        await run_holding_stage(
            ctx, self.settings.input, step, hold, batch=batch, pop_timeout=self.settings.pop_timeout
        )

    def _account(self, ctx: Context, moved: int, held: bool, counts: list[int]) -> None:
        if moved:
            ctx.metrics.observe("balance", moved, timeout=self.settings.batch)
            for out, count in zip(self.outputs, counts, strict=True):
                ctx.metrics.incr("balance", out.queue, int(count))
        if held and not self._holding:
            ctx.metrics.incr("balance", "held")  # one per back-pressure episode
        if not held or moved:
            self._hold.reset()
        self._holding = held

    async def _check_consumers(self, redis: AnyRedis) -> None:
        for index, out in enumerate(self.outputs):
            if out.consumers is None:
                continue
            live = await consumers_alive(redis, out.consumers)
            if live != self._live[index]:
                state = "a consumer is live: using it" if live else "no live consumer: skipping it"
                log.info("out %s (%s): %s", out.queue, out.consumers, state)
            self._live[index] = live


def create(settings: MbalanceSettings) -> Mbalance:
    return Mbalance(settings)
