"""The loop behind every Python handler: pop request messages, call a function, push responses.

A handler is a function from a ``Request`` to a ``Response`` (plain or ``async``)::

    def hello(request: Request) -> Response:
        return Response.text(request.id, f"hello {request.params.get('name', 'world')}\\n")

run with ``mpush handler --handler mymodule:hello --in hello:req`` (``mpush.services.handler``:
registered, metrics, signals and Redis outages handled like every mpush service), or embedded with
``HandlerLoop``. hfiler, hrender and rquery are ``RequestService`` subclasses.

Requests are taken in batches and handled concurrently (at most ``concurrency`` at once); the
responses of a batch are pushed with one pipeline, one ``LPUSH`` per reply list. A service may
also do a batch's I/O up front (``Prepare``: hfiler reads each file a batch asks for once), so
that its handler can answer each request at once, without a task per request. A request whose
deadline has passed is skipped and counted (nobody waits for it). A handler that raises answers 500
(the error goes to the log, not to the client); every 5xx answer is counted (``status:500``) in
the handler's metrics hash. A malformed request message is counted and set
aside on ``<queue>:bad``; when its id and reply list can still be read it is answered 400.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mpush.connection import AnyRedis, RedisTarget
from mpush.errors import ConfigError
from mpush.http.messages import MessageError, Request, Response, answer_address, error_response
from mpush.retry import Outage
from mpush.runtime.batches import Writes, pump
from mpush.runtime.metrics import Metrics
from mpush.runtime.runner import Context
from mpush.runtime.shutdown import Shutdown

__all__ = [
    "Handle",
    "HandlerLoop",
    "Prepare",
    "RequestService",
    "load_callable",
    "serve_requests",
]

log = logging.getLogger(__name__)

Handle = Callable[[Request], "Awaitable[Response] | Response"]
Prepare = Callable[[list[Request]], Awaitable[None]]  # a batch's I/O, before its requests


class HandlerLoop:
    """Serves the request messages of ``queue`` with ``handle`` until shutdown."""

    def __init__(
        self,
        redis: AnyRedis,
        queue: str,
        handle: Handle,
        *,
        metrics: Metrics,
        outage: Outage,
        name: str = "handler",
        batch: int = 100,
        concurrency: int = 64,
        pop_timeout: float = 1.0,
        prepare: Prepare | None = None,
    ) -> None:
        self._redis = redis
        self.queue = queue
        self._handle = handle
        self._prepare = prepare
        self._metrics = metrics
        self._outage = outage
        self._name = name
        self._batch = min(batch, concurrency)
        self._pop_timeout = pop_timeout

    async def run(self, shutdown: Shutdown) -> None:
        await pump(
            self._redis,
            self.queue,
            self.handle_batch,
            count=self._batch,
            pop_timeout=self._pop_timeout,
            shutdown=shutdown,
            outage=self._outage,
        )

    async def handle_batch(self, batch: list[bytes]) -> Writes:
        """Handle a batch of request messages; return the response pushes."""
        now = time.time()
        writes = Writes()
        requests: list[Request] = []
        for raw in batch:
            try:
                request = Request.from_json(raw)
            except MessageError:
                writes.set_aside(self.queue, raw)
                self._metrics.incr(self._name, "malformed")
                answer = answer_address(raw)
                if answer is not None:
                    self._reply(writes, answer[1], error_response(answer[0], 400, "Bad Request"))
                continue
            if request.deadline < now:
                self._metrics.incr(self._name, "expired")
                continue
            requests.append(request)
        if self._prepare is not None and requests:
            try:
                await self._prepare(requests)
            except Exception:  # the handler does the I/O itself, and answers 500 if it fails too
                log.exception("%s could not prepare a batch of %d", self._name, len(requests))
        waiting: list[tuple[Request, float, object]] = []
        for request in requests:
            began = time.monotonic()
            try:
                result = self._handle(request)
            except Exception:
                result = self._failed(request)
            if isinstance(result, Response):  # a plain function: done already
                self._done(writes, request, began, result)
            else:
                waiting.append((request, began, result))
        if waiting:
            results = await asyncio.gather(*(self._finish(r, w) for r, _, w in waiting))
            for (request, began, _), result in zip(waiting, results, strict=True):
                self._done(writes, request, began, result)
        return writes

    async def _finish(self, request: Request, result: object) -> Response:
        try:
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Response):
                raise TypeError(f"the handler returned {type(result).__name__}, not a Response")
        except Exception:
            return self._failed(request)
        return result

    def _failed(self, request: Request) -> Response:
        log.exception("%s failed on %s %s", self._name, request.method, request.path)
        self._metrics.incr(self._name, "errors")
        return error_response(request.id, 500, "Internal Server Error")

    def _done(self, writes: Writes, request: Request, began: float, response: Response) -> None:
        self._metrics.observe(self._name, time.monotonic() - began, timeout=request.timeout)
        if response.status >= 500:  # a handler's failures, raised or answered, per status
            self._metrics.incr(self._name, f"status:{response.status}")
        writes.reply(request.reply, response.to_json())

    @staticmethod
    def _reply(writes: Writes, reply: str, response: Response) -> None:
        writes.reply(reply, response.to_json())


def load_callable(spec: str, setting: str) -> Callable[..., Any]:
    """The callable named ``module:function``; ConfigError(setting, …) when it is not there."""
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(setting, f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(setting, f"{spec!r}: {module_name} has no {attribute!r}")
    if not callable(target):
        raise ConfigError(setting, f"{spec!r} is not callable")
    found: Callable[..., Any] = target
    return found


async def serve_requests(
    ctx: Context,
    queue: str,
    handle: Handle,
    *,
    name: str,
    batch: int,
    concurrency: int,
    pop_timeout: float,
    prepare: Prepare | None = None,
) -> None:
    """Serve the request messages of ``queue`` with ``handle`` until the service stops."""
    loop = HandlerLoop(
        ctx.redis, queue, handle, metrics=ctx.metrics, outage=ctx.outage, name=name,
        batch=batch, concurrency=concurrency, pop_timeout=pop_timeout, prepare=prepare,
    )  # fmt: skip
    await loop.run(ctx.shutdown)


class _ServesRequests(Protocol):
    @property
    def input(self) -> str: ...
    @property
    def batch(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def pop_timeout(self) -> float: ...


class RequestService:
    """What the handler services (hfiler, hrender, rquery) share: the runner's Service protocol
    around ``serve_requests``; a subclass names itself and implements ``handle`` (and may do a
    batch's I/O up front in ``prepare_batch``)."""

    name: str
    settings: _ServesRequests
    _redis: AnyRedis | None = None
    _metrics: Metrics = Metrics.disabled()

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        return None

    async def run(self, ctx: Context) -> None:
        self._redis, self._metrics = ctx.redis, ctx.metrics
        settings = self.settings
        await serve_requests(
            ctx, settings.input, self.handler(), name=self.name, batch=settings.batch,
            concurrency=settings.concurrency, pop_timeout=settings.pop_timeout,
            prepare=self.prepare_batch,
        )  # fmt: skip

    def handler(self) -> Handle:
        """The function each request is handled with: ``handle`` unless a subclass says else."""
        return self.handle

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        raise NotImplementedError

    async def prepare_batch(self, requests: list[Request]) -> None:
        """Do the I/O the batch's requests need before each is handled (nothing by default)."""
        return
