"""hgateway: an HTTP server that turns each request into a message and answers with its response.

Configuration is discovered from the Redis hash ``<ns>:config`` (port, queue, timeout, body limit,
queue limit, …); flags, ``MPUSH_*`` variables and the config file override it, and ``--port``
works without it. Each request becomes a message (``mpush.http.messages``) with an absolute
deadline and this instance's reply list, pushed to the request queue (default ``hgateway:req``) —
or, when one of the gateway's own routes (``--route``, as hrouter's) matches, straight to that
route's queue with ``route`` and ``params`` set; the response message popped from the reply list
is the answer.

Answers of its own: 504 at the deadline; 503 with Retry-After when the request queue is over its
limit, when no live instance is registered consuming it, when Redis is unreachable, or while
shutting down; 413 over the body limit; 400 for a request it cannot turn into a message; 502 for a
malformed response or one a client must not get (a status outside 200…599, a header that is not
HTTP) — a body on a 204 or 304 is dropped. Never a stack trace. On shutdown it stops listening,
lets the requests in flight finish for up to ``drain`` seconds, and answers the rest with 503.

Answers a handler marks ``Cache-Control: public`` are reused for up to ``cache_max_age`` seconds
(``mpush.http.cache``): repeats of a hot ``GET`` are answered without a round trip through Redis.

With ``reuse_port`` several gateways of one host listen on the same port (``SO_REUSEPORT``): the
kernel spreads new connections among them, and one that stops leaves the port to the others.

Served by ``mpush.http.server`` and ``mpush.http.protocol`` (httptools on uvloop), with their
limits: receipt timeouts, header sizes, a cap on connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import time
from collections.abc import Mapping

from mpush.config import GatewaySettings, overlay
from mpush.connection import AnyRedis, RedisTarget, reply_text
from mpush.errors import ConfigError
from mpush.http.cache import ResponseCache, SharedDrops, Ticket
from mpush.http.exchange import METRIC, Exchange
from mpush.http.messages import MessageError, Response, encode_request, error_response
from mpush.http.protocol import HttpRequest, Limits
from mpush.http.routes import RouteError, RouteTable, parse_routes
from mpush.http.server import HttpServer, raise_open_files
from mpush.keys import HttpKeys, ServiceKeys, keyed
from mpush.retry import keep_trying
from mpush.runtime.metrics import Metrics
from mpush.runtime.runner import Context

__all__ = ["Gateway", "GatewayApp", "create"]

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date"}
)
_HEALTH_INTERVAL = 0.5
_GC_THRESHOLDS = (20_000, 20, 20)  # fewer young-generation passes: requests allocate a lot


def create(settings: GatewaySettings) -> Gateway:
    try:
        routes = parse_routes(settings.route)
    except RouteError as exc:
        raise ConfigError("route", str(exc)) from None
    return Gateway(settings, RouteTable(routes))


class Health:
    """What the gateway knows about its queues' other side, refreshed in the background."""

    def __init__(self) -> None:
        self.consumers: dict[str, int] = {}  # queue → live instances consuming it; absent: unknown


class GatewayApp:
    """The request handler: each HTTP request becomes a message; its response message the
    answer."""

    def __init__(
        self,
        exchange: Exchange,
        settings: GatewaySettings,
        metrics: Metrics,
        health: Health,
        routes: RouteTable | None = None,
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.routes = routes if routes is not None and routes.configured else None
        self.draining = False
        self.cache: ResponseCache | None = None
        if settings.cache_bytes and settings.cache_max_age:
            self.cache = ResponseCache(
                settings.cache_bytes, settings.cache_max_age, settings.cache_max_entry
            )
        self._timeout = settings.timeout
        self._retry_after = [(b"retry-after", str(settings.retry_after).encode())]

    def __call__(self, request: HttpRequest) -> None:
        began = time.monotonic()
        ticket = None
        cache = self.cache
        if cache is not None:
            ticket = cache.begin(request.method, request.path, request.query, request.headers)
            hit = cache.lookup(ticket)
            if hit is not None:
                request.answer(hit.status, hit.pairs, hit.body)
                self.metrics.incr(METRIC, "cache_hit")
                self.metrics.incr(METRIC, f"status:{hit.status}")
                return
        try:
            self._forward(request, ticket, began)
        except Exception:  # never a stack trace to the client; one to the log
            log.exception("request failed inside the gateway")
            self._own(request, 500, "Internal Server Error")

    def _forward(self, request: HttpRequest, ticket: Ticket | None, began: float) -> None:
        settings = self.settings
        if self.draining:
            self._own(request, 503, "Service Unavailable", self._retry_after)
            return
        path = request.path.decode("latin-1")
        if not path.startswith("/"):
            self._own(request, 400, "Bad Request")
            return
        method = request.method
        queue = self.exchange.queue
        route = params = None
        if self.routes is not None:
            found = self.routes.match(method, path)
            if found is not None:
                queue, route, params = found[0].queue, found[0].name, found[1]
        if self.health.consumers.get(queue) == 0:
            self.metrics.incr(METRIC, "no_consumer")
            self._own(request, 503, "Service Unavailable", self._retry_after)
            return
        if settings.queue_limit and self.exchange.queue_length(queue) > settings.queue_limit:
            self.metrics.incr(METRIC, "queue_full")
            self._own(request, 503, "Service Unavailable", self._retry_after)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name in headers:
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
        exchange = self.exchange
        request_id = exchange.new_id()
        now = time.time()
        message = encode_request(
            request_id, method, path, request.query.decode("latin-1"), headers, request.body,
            ts=now, deadline=now + self._timeout, reply=exchange.reply, route=route,
            params=params,
        )  # fmt: skip
        request.body = b""  # in the message now: not held twice while the answer is awaited

        def answered(response: Response) -> None:
            self._send(request, response, ticket)
            self.metrics.observe(
                "hgateway:response", time.monotonic() - began, timeout=self._timeout
            )

        exchange.submit(request_id, message, answered, queue)

    def _send(self, request: HttpRequest, response: Response, ticket: Ticket | None) -> None:
        """Answer with ``response`` if a client may be sent it, else with a 502."""
        try:
            headers = response.wire_headers(_HOP_BY_HOP)
        except MessageError as exc:
            self.metrics.incr(METRIC, "invalid_answer")
            log.warning(
                "502 for %s %s: the handler's answer %s", request.method, _shown(request), exc
            )
            self._own(request, 502, "Bad Gateway")
            return
        status, body = response.status, response.body
        if body and status in (204, 304):
            self.metrics.incr(METRIC, "body_dropped")
            log.warning(
                "the body of a %d answer to %s %s dropped (a %d has none)",
                status, request.method, _shown(request), status,
            )  # fmt: skip
            body = b""
        cache = self.cache
        if cache is not None and ticket is not None:
            try:
                if cache.store(ticket, status, headers, body):
                    self.metrics.incr(METRIC, "cache_store")
            except Exception:  # an answer the cache cannot take is still answered
                log.exception("the response cache failed to store an answer")
        request.answer(status, headers, body)
        self.metrics.incr(METRIC, f"status:{status}")

    def _own(
        self,
        request: HttpRequest,
        status: int,
        reason: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Answer with an error of the gateway's own."""
        answer = error_response("-", status, reason)
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *(extra or [])]
        request.answer(status, headers, answer.body)
        self.metrics.incr(METRIC, f"status:{status}")


def _shown(request: HttpRequest) -> str:
    """The request's path for a log line, cut short."""
    return request.path[:200].decode("latin-1")


class Gateway:
    """The hgateway service."""

    name = "hgateway"

    def __init__(self, settings: GatewaySettings, routes: RouteTable | None = None) -> None:
        self.settings = settings
        self.routes = routes or RouteTable([])
        self._socket: socket.socket | None = None

    def registry_info(self) -> Mapping[str, str]:
        return {"out": ",".join(self._queues()), "port": str(self.port)}

    def _queues(self) -> list[str]:
        """Every queue requests go to: the request queue, then the routes' queues."""
        return list(
            dict.fromkeys([self.settings.queue, *(r.queue for r in self.routes.configured)])
        )

    @property
    def port(self) -> int:
        if self._socket is not None:
            return int(self._socket.getsockname()[1])
        return self.settings.port

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        namespace = self.settings.service_namespace
        if namespace:
            key = HttpKeys(namespace).config
            assert key is not None
            raw = await redis.hgetall(key)
            found = {reply_text(k): reply_text(v) for k, v in raw.items()}
            for name in found:
                if name not in GatewaySettings.discoverable:
                    raise ConfigError(
                        f"{key} {name}",
                        "not a setting hgateway discovers from Redis "
                        f"({', '.join(GatewaySettings.discoverable)})",
                    )
            if found:
                self.settings = overlay(self.settings, found, origin=key)
                log.info("configuration discovered from %s: %s", key, ", ".join(sorted(found)))
        self._socket = _listen(
            self.settings.host, self.settings.port, reuse_port=self.settings.reuse_port
        )

    def limits(self) -> Limits:
        """The server's limits from the settings, the connection cap within the open-files limit."""
        settings = self.settings
        return Limits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_connections=raise_open_files(settings.max_connections),
            max_request_line=settings.max_request_line,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            body_limit=settings.body_limit,
        )

    async def run(self, ctx: Context) -> None:
        settings = self.settings
        assert self._socket is not None, "prepare() binds the socket"
        instance = str(ctx.instance_id) if ctx.instance_id is not None else secrets.token_hex(4)
        reply_prefix = settings.reply_prefix or HttpKeys(settings.service_namespace).reply_prefix
        exchange = Exchange(
            ctx.redis,
            queue=settings.queue,
            reply=keyed(reply_prefix, instance),
            id_prefix=instance,
            batch=settings.batch,
            timeout=settings.timeout,
            pop_timeout=settings.pop_timeout,
            metrics=ctx.metrics,
            outage=ctx.outage,
        )
        health = Health()
        app = GatewayApp(exchange, settings, ctx.metrics, health, self.routes)

        def refused(reason: str) -> None:
            ctx.metrics.incr(METRIC, f"refused:{reason}")

        server = HttpServer(app, self.limits(), refused)
        gc.freeze()  # what exists now lives as long as the process: keep it out of GC passes
        gc.set_threshold(*_GC_THRESHOLDS)
        exchange_task = asyncio.create_task(exchange.run())
        drops = None
        if app.cache is not None and settings.service_namespace:
            drops = SharedDrops(ServiceKeys(settings.service_namespace).cache_dropped, instance)
            with contextlib.suppress(Exception):  # else the first swap starts it
                await drops.start(ctx.redis)
        health_task = asyncio.create_task(self._watch(ctx, exchange, health, app.cache, drops))
        await server.start(self._socket)
        host, port = self._socket.getsockname()[:2]
        log.info("listening on http://%s:%d, requests to %s", host, port, settings.queue)
        stopped = asyncio.create_task(ctx.shutdown.wait())
        try:
            await asyncio.wait(
                {stopped, exchange_task, health_task}, return_when=asyncio.FIRST_COMPLETED
            )
            app.draining = True
            server.stop_listening()
            await self._drain(exchange)
        finally:
            exchange.close()
            await server.close()
            for task in (stopped, health_task):
                task.cancel()
            async with asyncio.timeout(settings.pop_timeout + 2):
                await asyncio.gather(exchange_task, health_task, return_exceptions=True)
            for task in (exchange_task, health_task):
                failure = task.exception() if task.done() and not task.cancelled() else None
                if failure is not None:
                    raise failure

    async def _drain(self, exchange: Exchange) -> None:
        await exchange.wait_idle(self.settings.drain)
        answered = exchange.answer_all()
        if answered:
            log.warning("shutdown: answered %d requests still in flight with 503", answered)

    async def _watch(
        self,
        ctx: Context,
        exchange: Exchange,
        health: Health,
        cache: ResponseCache | None,
        drops: SharedDrops | None,
    ) -> None:
        """Keep the queues' lengths and the count of live consumers of each fresh; share the
        URLs dropped from the response cache with the other gateways of the namespace."""
        namespace = self.settings.service_namespace
        keys = ServiceKeys(namespace) if namespace else None
        queues = self._queues()

        async def look() -> None:
            for queue in queues:
                exchange.note_length(queue, int(await ctx.redis.llen(queue)))
            if keys is not None and self.settings.require_consumer:
                health.consumers = await _consumers(ctx.redis, keys, queues)
            if cache is not None and drops is not None:
                await drops.swap(ctx.redis, cache)

        def unknown(_: Exception) -> None:
            health.consumers = {}  # unknown: pushing will tell

        await keep_trying(
            look,
            outage=ctx.outage,
            shutdown=ctx.shutdown,
            every=_HEALTH_INTERVAL,
            on_transient=unknown,
        )


async def _consumers(redis: AnyRedis, keys: ServiceKeys, queues: list[str]) -> dict[str, int]:
    """How many registered, live instances name each of ``queues`` in their ``in`` field."""
    ids = [reply_text(i) for i in await redis.lrange(keys.ids, 0, -1)]
    counts = dict.fromkeys(queues, 0)
    if not ids:
        return counts
    async with redis.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.hget(keys.instance(instance_id), "in")
        fields = await pipe.execute()
    for found in fields:
        for queue in reply_text(found).split(",") if found is not None else ():
            if queue in counts:
                counts[queue] += 1
    return counts


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # every gateway of the host listens; the kernel spreads the connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
