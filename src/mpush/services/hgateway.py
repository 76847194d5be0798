"""hgateway: an HTTP server that turns each request into a message and answers with its response.

Configuration is discovered from the Redis hash ``<ns>:config`` (port, queue, timeout, body limit,
queue limit, …); flags, ``MPUSH_*`` variables and the config file override it, and ``--port``
works without it. Each request becomes a message (``mpush.http.messages``) with an absolute
deadline and this instance's reply list, pushed to the request queue (default ``hgateway:req``);
the response message popped from the reply list is the answer.

Answers of its own: 504 at the deadline; 503 with Retry-After when the request queue is over its
limit, when no live instance is registered consuming it, when Redis is unreachable, or while
shutting down; 413 over the body limit; 400 for a request it cannot turn into a message; 502 for a
malformed response. Never a stack trace. On shutdown it stops listening, lets the requests in flight
finish for up to ``drain`` seconds, and answers the rest with 503.

Answers a handler marks ``Cache-Control: public`` are reused for up to ``cache_max_age`` seconds
(``mpush.http.cache``): repeats of a hot ``GET`` are answered without a round trip through Redis.

Served by uvicorn (uvloop, httptools) with a plain ASGI app; the runner owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import time
from collections.abc import Generator, Mapping
from typing import Any

import uvicorn

from mpush.config import GatewaySettings, overlay
from mpush.connection import AnyRedis, RedisTarget, reply_text
from mpush.errors import ConfigError
from mpush.http.cache import ResponseCache, SharedDrops
from mpush.http.exchange import METRIC, TIMED_OUT, Exchange, QueueUnavailable
from mpush.http.messages import Response, encode_request, error_response
from mpush.keys import HttpKeys, ServiceKeys, keyed
from mpush.retry import keep_trying
from mpush.runtime.metrics import Metrics
from mpush.runtime.runner import Context

__all__ = ["Gateway", "GatewayApp", "create"]

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_HEALTH_INTERVAL = 0.5
_GC_THRESHOLDS = (20_000, 20, 20)  # fewer young-generation passes: requests allocate a lot


def create(settings: GatewaySettings) -> Gateway:
    return Gateway(settings)


class Health:
    """What the gateway knows about the request queue's other side, refreshed in the background."""

    def __init__(self) -> None:
        self.consumers: int | None = None  # live instances consuming the queue; None: unknown


class GatewayApp:
    """The ASGI app: each HTTP request becomes a message; its response message the answer."""

    def __init__(
        self, exchange: Exchange, settings: GatewaySettings, metrics: Metrics, health: Health
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.draining = False
        self.cache: ResponseCache | None = None
        if settings.cache_bytes and settings.cache_max_age:
            self.cache = ResponseCache(
                settings.cache_bytes, settings.cache_max_age, settings.cache_max_entry
            )
        self._timeout = settings.timeout
        self._retry_after = [(b"retry-after", str(settings.retry_after).encode())]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        began = time.monotonic()
        cache = self.cache
        if cache is not None:
            ticket = cache.begin(scope)
            hit = cache.lookup(ticket)
            if hit is not None:
                await send(
                    {"type": "http.response.start", "status": hit.status, "headers": hit.pairs}
                )
                await send({"type": "http.response.body", "body": hit.body})
                self.metrics.incr(METRIC, "cache_hit")
                self.metrics.incr(METRIC, f"status:{hit.status}")
                return
        try:
            response, extra = await self._answer(scope, receive)
        except Exception:  # never a stack trace to the client; one to the log
            log.exception("request failed inside the gateway")
            response, extra = error_response("-", 500, "Internal Server Error"), []
        try:
            headers = response.header_pairs(_HOP_BY_HOP)
        except UnicodeEncodeError:
            self.metrics.incr(METRIC, "malformed")
            response, headers = error_response(response.id, 502, "Bad Gateway"), []
            headers = response.header_pairs()
        if response.status not in (204, 304):  # those have no body, so no length to give
            headers.append((b"content-length", str(len(response.body)).encode()))
        if cache is not None:
            try:
                if cache.store(ticket, response.status, list(headers), response.body):
                    self.metrics.incr(METRIC, "cache_store")
            except Exception:  # an answer the cache cannot take is still answered
                log.exception("the response cache failed to store an answer")
        headers += extra
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        self.metrics.observe("hgateway:response", time.monotonic() - began, timeout=self._timeout)
        self.metrics.incr(METRIC, f"status:{response.status}")

    async def _answer(self, scope: Any, receive: Any) -> tuple[Response, list[Any]]:
        settings = self.settings
        if self.draining:
            return error_response("-", 503, "Service Unavailable"), self._retry_after
        if self.health.consumers == 0:
            self.metrics.incr(METRIC, "no_consumer")
            return error_response("-", 503, "Service Unavailable"), self._retry_after
        if settings.queue_limit and self.exchange.queue_length > settings.queue_limit:
            self.metrics.incr(METRIC, "queue_full")
            return error_response("-", 503, "Service Unavailable"), self._retry_after
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name in headers:
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
        declared = headers.get("content-length", "0")
        if not declared.isdigit():
            return error_response("-", 400, "Bad Request"), []
        if int(declared) > settings.body_limit:
            return error_response("-", 413, "Content Too Large"), []
        body: bytes | None = b""
        if declared != "0" or "transfer-encoding" in headers:
            body = await self._read_body(receive)
        if body is None:
            return error_response("-", 413, "Content Too Large"), []
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if not path.startswith("/"):
            return error_response("-", 400, "Bad Request"), []
        query = scope["query_string"].decode("latin-1")
        return await self._exchange(scope["method"], path, query, headers, body), []

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return b""  # the client went away; what we answer goes nowhere
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.body_limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _exchange(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response:
        exchange = self.exchange
        request_id = exchange.new_id()
        now = time.time()
        message = encode_request(
            request_id, method, path, query, headers, body,
            ts=now, deadline=now + self.settings.timeout, reply=exchange.reply,
        )  # fmt: skip
        future = exchange.submit(request_id, message)
        try:
            response = await future
            if response is TIMED_OUT:
                self.metrics.incr(METRIC, "timeout")
                return error_response(request_id, 504, "Gateway Timeout")
            return response
        except QueueUnavailable:
            self.metrics.incr(METRIC, "unavailable")
            return Response(
                request_id,
                503,
                {"content-type": "text/plain; charset=utf-8", "retry-after": "1"},
                b"503 Service Unavailable\n",
            )
        finally:
            exchange.forget(request_id)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the mpush runner owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Gateway:
    """The hgateway service."""

    name = "hgateway"

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._socket: socket.socket | None = None

    def registry_info(self) -> Mapping[str, str]:
        return {"out": self.settings.queue, "port": str(self.port)}

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
        self._socket = _listen(self.settings.host, self.settings.port)

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
        app = GatewayApp(exchange, settings, ctx.metrics, health)
        config = uvicorn.Config(
            app,
            http="httptools",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(settings.drain) + 2,
        )
        server = _Server(config)
        gc.freeze()  # what exists now lives as long as the process: keep it out of GC passes
        gc.set_threshold(*_GC_THRESHOLDS)
        exchange_task = asyncio.create_task(exchange.run())
        drops = None
        if app.cache is not None and settings.service_namespace:
            drops = SharedDrops(ServiceKeys(settings.service_namespace).cache_dropped, instance)
            with contextlib.suppress(Exception):  # else the first swap starts it
                await drops.start(ctx.redis)
        health_task = asyncio.create_task(self._watch(ctx, exchange, health, app.cache, drops))
        serve_task = asyncio.create_task(server.serve(sockets=[self._socket]))
        host, port = self._socket.getsockname()[:2]
        log.info("listening on http://%s:%d, requests to %s", host, port, settings.queue)
        stopped = asyncio.create_task(ctx.shutdown.wait())
        try:
            await asyncio.wait(
                {stopped, serve_task, exchange_task, health_task},
                return_when=asyncio.FIRST_COMPLETED,
            )
            app.draining = True
            server.should_exit = True
            await self._drain(exchange)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.drain + 3):
                    await asyncio.shield(serve_task)
        finally:
            exchange.close()
            server.force_exit = True
            for task in (stopped, health_task):
                task.cancel()
            async with asyncio.timeout(settings.pop_timeout + 2):
                await asyncio.gather(exchange_task, serve_task, return_exceptions=True)
            for task in (exchange_task, health_task, serve_task):
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
        """Keep the queue length and the count of live consumers of the queue fresh; share the
        URLs dropped from the response cache with the other gateways of the namespace."""
        namespace = self.settings.service_namespace
        keys = ServiceKeys(namespace) if namespace else None

        async def look() -> None:
            exchange.note_length(int(await ctx.redis.llen(exchange.queue)))
            if keys is not None and self.settings.require_consumer:
                health.consumers = await _consumers(ctx.redis, keys, exchange.queue)
            if cache is not None and drops is not None:
                await drops.swap(ctx.redis, cache)

        def unknown(_: Exception) -> None:
            health.consumers = None  # unknown: pushing will tell

        await keep_trying(
            look,
            outage=ctx.outage,
            shutdown=ctx.shutdown,
            every=_HEALTH_INTERVAL,
            on_transient=unknown,
        )


async def _consumers(redis: AnyRedis, keys: ServiceKeys, queue: str) -> int:
    """How many registered, live instances name ``queue`` in their ``in`` field."""
    ids = [reply_text(i) for i in await redis.lrange(keys.ids, 0, -1)]
    if not ids:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.hget(keys.instance(instance_id), "in")
        fields = await pipe.execute()
    return sum(1 for f in fields if f is not None and queue in reply_text(f).split(","))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
