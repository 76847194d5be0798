"""mdispatch: the request/response correlator. Responses that carry only a request id reach the
instance that waits for them.

Requests in flight are registered (``mpush.http.correlation``: reply list, deadline, send time,
route) by hrouter for every request it routes, or by mdispatch itself for the request messages of
``--requests``, which it then pushes on to ``--forward`` — so it works for any request/response
traffic over Redis lists, not only HTTP.

Responses pushed to the shared response list (``--in``, default ``hgateway:res``) are matched to
their registration (read and deleted in one ``GETDEL``, so each is delivered once) and pushed,
unchanged, to the registered reply list. Responses after the deadline (``late``) and for ids with no
registration (``unknown``) are dropped and counted; a response without a readable id is counted and
set aside on ``<in>:bad``. Per-route response times go to ``mdispatch:route:<name>``, the histogram
normalised by each request's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from mpush.config import DispatchSettings
from mpush.connection import AnyRedis, RedisTarget
from mpush.http.correlation import Registration
from mpush.http.messages import MessageError, ReplyAddress, response_id
from mpush.keys import HttpKeys, keyed
from mpush.runtime.batches import Writes, pump
from mpush.runtime.runner import Context

__all__ = ["Dispatcher", "create"]

log = logging.getLogger(__name__)

METRIC = "mdispatch"
REPLY_EXPIRE = 60


def create(settings: DispatchSettings) -> Dispatcher:
    return Dispatcher(settings)


class Dispatcher:
    """The mdispatch service."""

    name = "mdispatch"

    def __init__(self, settings: DispatchSettings) -> None:
        self.settings = settings
        self.track_prefix = (
            settings.track_prefix or HttpKeys(settings.service_namespace).track_prefix
        )

    def registry_info(self) -> Mapping[str, str]:
        ins = [self.settings.input, *([self.settings.requests] if self.settings.requests else [])]
        return {"in": ",".join(ins), "out": self.settings.forward or ""}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        return None

    async def run(self, ctx: Context) -> None:
        settings = self.settings

        async def dispatch(batch: list[bytes]) -> Writes:
            return await self.dispatch(ctx, batch)

        async def register(batch: list[bytes]) -> Writes:
            return self.register(ctx, batch)

        loops = [(settings.input, dispatch)]
        if settings.requests and settings.forward:
            loops.append((settings.requests, register))
        async with asyncio.TaskGroup() as group:
            for source, handle in loops:
                group.create_task(
                    pump(
                        ctx.redis,
                        source,
                        handle,
                        count=settings.batch,
                        pop_timeout=settings.pop_timeout,
                        shutdown=ctx.shutdown,
                        outage=ctx.outage,
                    )
                )

    async def dispatch(self, ctx: Context, batch: list[bytes]) -> Writes:
        """Route a batch of responses to the reply lists of their registered requests."""
        prefix = self.track_prefix
        ids: list[str | None] = [response_id(raw) for raw in batch]
        known = [request_id for request_id in ids if request_id is not None]
        found: dict[str | None, Any] = {}
        if known:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                for one in known:
                    pipe.getdel(keyed(prefix, one))
                found = dict(zip(known, await pipe.execute(), strict=True))
        now = time.time()
        writes = Writes()
        for raw, request_id in zip(batch, ids, strict=True):
            if request_id is None:
                writes.set_aside(self.settings.input, raw)
                ctx.metrics.incr(METRIC, "malformed")
                continue
            stored = found.get(request_id)
            registration = Registration.from_json(stored) if stored is not None else None
            if registration is None:
                ctx.metrics.incr(METRIC, "unknown")
                continue
            if registration.deadline < now:
                ctx.metrics.incr(METRIC, "late")
                continue
            writes.push(registration.reply, raw)
            writes.expire[registration.reply] = REPLY_EXPIRE
            ctx.metrics.observe(
                f"{METRIC}:route:{registration.route}",
                max(now - registration.ts, 0.0),
                timeout=registration.timeout,
            )
            ctx.metrics.incr(METRIC, "forwarded")
        return writes

    def register(self, ctx: Context, batch: list[bytes]) -> Writes:
        """Register a batch of request messages and push them on to ``forward``."""
        assert self.settings.forward is not None
        assert self.settings.requests is not None
        prefix = self.track_prefix
        writes = Writes()
        for raw in batch:
            try:
                address = ReplyAddress.read(raw)
            except MessageError:
                writes.set_aside(self.settings.requests, raw)
                ctx.metrics.incr(METRIC, "malformed_requests")
                continue
            registration = Registration.of(address)
            key = keyed(prefix, address.id)
            writes.registrations.append((key, registration.to_json(), registration.expire_at_ms()))
            writes.push(self.settings.forward, raw)
            ctx.metrics.incr(METRIC, "registered")
        return writes
