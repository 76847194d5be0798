"""hrouter: routes each HTTP request message to a service queue by matching its URL path.

Routes (``mpush.http.routes``) come from ``--route`` flags / the config file, and live from the
Redis list ``<ns>:routes`` (or ``--routes-key``), checked every ``reload`` seconds: a change there
is applied without a restart, live routes first. A list holding an invalid route is refused as a
whole with one error line naming the route, and the routes in use stay.

Each batch of requests popped from the input is routed in one pipeline: the message gains
``route`` and ``params`` and is pushed to its route's queue; with ``track`` (default) it is also
registered for mdispatch (``mpush.http.correlation``). No route → a 404 response message to the
request's reply list. A request past its deadline is dropped (nobody waits). A malformed message
is counted and set aside on ``<input>:bad``. Per-route metrics ``hrouter:route:<name>`` observe how
long requests waited before routing, normalised by their timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from mpush.config import RouterSettings
from mpush.connection import AnyRedis, RedisTarget, reply_text
from mpush.errors import ConfigError
from mpush.http.correlation import Registration
from mpush.http.messages import MessageError, RequestHead, error_response, with_route
from mpush.http.routes import RouteError, RouteTable, parse_routes
from mpush.keys import HttpKeys, keyed
from mpush.retry import keep_trying
from mpush.runtime.batches import Writes, pump
from mpush.runtime.runner import Context

__all__ = ["Router", "create"]

log = logging.getLogger(__name__)

METRIC = "hrouter"


def create(settings: RouterSettings) -> Router:
    try:
        configured = parse_routes(settings.route)
    except RouteError as exc:
        raise ConfigError("route", str(exc)) from None
    return Router(settings, RouteTable(configured))


class Router:
    """The hrouter service."""

    name = "hrouter"

    def __init__(self, settings: RouterSettings, table: RouteTable) -> None:
        self.settings = settings
        self.table = table
        self._live_source: list[str] | None = None
        ns = settings.service_namespace
        self.routes_key = settings.routes_key or HttpKeys(ns).routes
        self.track_prefix = settings.track_prefix or HttpKeys(ns).track_prefix

    def registry_info(self) -> Mapping[str, str]:
        queues = dict.fromkeys(route.queue for route in self.table.configured)
        return {"in": self.settings.input, "out": ",".join(queues)}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if self.routes_key is None and not self.table.configured:
            raise ConfigError(
                "route", "no routes: give --route, or a namespace whose <ns>:routes holds them"
            )
        if self.routes_key is not None:
            await self.reload(redis)

    async def reload(self, redis: AnyRedis) -> bool:
        """Apply the Redis routes if they changed; True when applied. Invalid → logged, kept."""
        assert self.routes_key is not None
        raw = await redis.lrange(self.routes_key, 0, -1)
        source = [reply_text(r) for r in raw]
        if source == self._live_source:
            return False
        self._live_source = source
        try:
            live = parse_routes(source)
        except RouteError as exc:
            log.error(
                "%s refused, the %d routes in use stay: %s",
                self.routes_key,
                len(self.table.live),
                exc,
            )
            return False
        self.table.live = live
        log.info(
            "routes from %s applied: %d live, %d configured",
            self.routes_key,
            len(live),
            len(self.table.configured),
        )
        return True

    async def run(self, ctx: Context) -> None:
        settings = self.settings

        async def route(batch: list[bytes]) -> Writes:
            return self.route(ctx, batch)

        watcher = asyncio.create_task(self._watch(ctx))
        try:
            await pump(
                ctx.redis,
                settings.input,
                route,
                count=settings.batch,
                pop_timeout=settings.pop_timeout,
                shutdown=ctx.shutdown,
                outage=ctx.outage,
            )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, ctx: Context) -> None:
        if self.routes_key is None:
            return
        await keep_trying(
            lambda: self.reload(ctx.redis),
            outage=ctx.outage,
            shutdown=ctx.shutdown,
            every=self.settings.reload,
        )

    def route(self, ctx: Context, batch: list[bytes]) -> Writes:
        """Route a batch of request messages; return the pushes (and registrations) it needs."""
        now = time.time()
        metrics = ctx.metrics
        writes = Writes()
        for raw in batch:
            try:
                head = RequestHead.read(raw)
            except MessageError:
                writes.set_aside(self.settings.input, raw)
                metrics.incr(METRIC, "malformed")
                continue
            address = head.address
            if address.deadline < now:
                metrics.incr(METRIC, "expired")
                continue
            found = self.table.match(head.method, head.path)
            if found is None:
                metrics.incr(METRIC, "notfound")
                answer = error_response(address.id, 404, "Not Found")
                writes.reply(address.reply, answer.to_json())
                continue
            route, params = found
            writes.push(route.queue, with_route(raw, route.name, params))
            if address.ts is not None:
                metrics.observe(
                    f"{METRIC}:route:{route.name}",
                    max(now - address.ts, 0.0),
                    timeout=address.deadline - address.ts,
                )
            if self.settings.track:
                registration = Registration.of(address, route.name)
                key = keyed(self.track_prefix, address.id)
                writes.registrations.append(
                    (key, registration.to_json(), registration.expire_at_ms())
                )
        return writes
