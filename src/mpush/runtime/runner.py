"""Runs one service: connect, register, work, and a staged, idempotent shutdown.

With ``--standby`` the service registers as standby and waits (a blocking pop on its activation
list) before its work starts: activated, it serves at once, its imports, connections and checks
long done.

With ``--metrics-port`` the process serves, from its first moment, its own ``/metrics`` and the
probes ``/healthz`` (live) and ``/readyz`` (registered, working, Redis answers):
``mpush.runtime.health``.

Stages on SIGTERM/SIGINT, remote shutdown (DEL of the registration), self-fencing or a failure:
  1. stop intake — the shutdown latch is set; work loops finish the step in hand;
  2. grace — the work gets ``pop_timeout + grace`` seconds to return, then is cancelled;
  3. bookkeeping — final metrics flush and deregistration (each bounded, best effort);
  4. close the Redis clients.
A second signal exits at once (code 130). Signal handlers only set the latch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mpush.connection import (
    AnyRedis,
    RedisTarget,
    connect,
    describe_client,
    describe_url,
    parse_redis_url,
)
from mpush.errors import MpushError
from mpush.exits import Exit, for_error
from mpush.keys import ServiceKeys
from mpush.retry import Backoff, Outage, outage_of, wait_until_reachable
from mpush.runtime.health import Health, HealthPolicy
from mpush.runtime.lifecycle import Lifecycle, LifecyclePolicy
from mpush.runtime.metrics import Metrics
from mpush.runtime.prometheus import ProcessExposition
from mpush.runtime.scrape import MetricsListener
from mpush.runtime.shutdown import Shutdown

__all__ = ["Context", "RunnerSettings", "Service", "run_service"]

log = logging.getLogger(__name__)

_BOOKKEEPING_TIMEOUT = 5.0
_GRACE = 5.0
_SOCKET_SLACK = 10.0  # a command's socket timeout: its blocking wait (pop_timeout) plus this
_CONNECT_TIMEOUT = 5.0
_PROBE_TIMEOUT = 1.0  # a readiness PING's connect and socket timeouts


class RunnerSettings(Protocol):
    """The part of the settings the runner reads (CommonSettings satisfies it)."""

    @property
    def redis(self) -> str: ...
    @property
    def cluster(self) -> bool: ...
    @property
    def service_namespace(self) -> str | None: ...
    @property
    def service_redis(self) -> str | None: ...
    @property
    def service_expire(self) -> int: ...
    @property
    def service_renew(self) -> float: ...
    @property
    def service_check(self) -> float: ...
    @property
    def service_capacity(self) -> int: ...
    @property
    def pop_timeout(self) -> float: ...
    @property
    def startup_timeout(self) -> float: ...
    @property
    def metrics_interval(self) -> float: ...
    @property
    def metrics_port(self) -> int | None: ...
    @property
    def metrics_host(self) -> str: ...
    @property
    def standby(self) -> bool: ...
    @property
    def service_label(self) -> str | None: ...
    @property
    def service_release(self) -> str | None: ...


@dataclass
class Context:
    """What a service's work loop is handed."""

    redis: AnyRedis
    target: RedisTarget
    shutdown: Shutdown
    metrics: Metrics
    instance_id: int | None
    outage: Outage  # the main Redis's outage record, shared by every loop of the process


class Service(Protocol):
    """A service module's runnable: named, self-describing, checked before it registers.

    A service may also set ``outlive_data_loss = True`` (``LifecyclePolicy``): its registration
    vanishing because Redis lost its data then registers it again instead of stopping it.
    """

    name: str

    def registry_info(self) -> Mapping[str, str]:
        """Extra fields for the registration hash (queues it works on, options)."""
        ...

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        """Validate against Redis before registering (slot checks, key types); ConfigError."""
        ...

    async def run(self, ctx: Context) -> None:
        """Work until ``ctx.shutdown`` is requested, then return."""
        ...


def run_service(service: Service, settings: RunnerSettings) -> int:
    """Run ``service`` to completion in a fresh event loop; return the process exit code."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_Run(service, settings).main())


class _Run:
    def __init__(self, service: Service, settings: RunnerSettings) -> None:
        self.service = service
        self.settings = settings
        self.shutdown = Shutdown()
        self.clients: list[AnyRedis] = []

    async def main(self) -> int:
        self._install_signal_handlers()
        try:
            return await self._serve()
        finally:
            for client in self.clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), _BOOKKEEPING_TIMEOUT)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.shutdown.requested:
            log.warning("second signal (%s): exiting at once", name)
            os._exit(Exit.SECOND_SIGNAL)
        self.shutdown.request(f"{name} received")

    def _client(self, url: str, key: str) -> tuple[AnyRedis, RedisTarget]:
        target = parse_redis_url(url, cluster=self.settings.cluster, key=key)
        # Blocking waits last pop_timeout: the socket timeout must outlast them.
        client = connect(
            target,
            socket_timeout=self.settings.pop_timeout + _SOCKET_SLACK,
            connect_timeout=_CONNECT_TIMEOUT,
        )
        self.clients.append(client)
        return client, target

    async def _serve(self) -> int:
        health = Health(self.shutdown, HealthPolicy(stale_after=self._stale_after()))
        # Bound first (a port in use is a ConfigError before anything else), and served from the
        # start: the probes answer while the process waits for Redis and registers.
        exposition, listener = self._own_metrics(health)
        listening: asyncio.Task[None] | None = None
        if listener is not None:
            listening = asyncio.create_task(listener.serve(self.shutdown))
            log.info("own metrics on http://%s:%d/metrics", *listener.address)
        try:
            return await self._start(health, exposition, listener, listening)
        finally:
            if listening is not None and not listening.done():
                listening.cancel()
                await asyncio.gather(listening, return_exceptions=True)

    async def _start(
        self,
        health: Health,
        exposition: ProcessExposition | None,
        listener: MetricsListener | None,
        listening: asyncio.Task[None] | None,
    ) -> int:
        settings = self.settings
        redis, target = self._client(settings.redis, "redis")
        registry_redis = redis
        if settings.service_redis:
            registry_redis, _ = self._client(settings.service_redis, "service_redis")
        await wait_until_reachable(
            redis, what=describe_client(redis), within=settings.startup_timeout
        )
        await self.service.prepare(redis, target)
        outage = outage_of(describe_client(redis))
        registry_outage = outage_of(describe_client(registry_redis))
        info = dict(self.service.registry_info())
        if listener is not None:
            host, port = listener.address
            info["metrics"] = f"{host}:{port}"

        if settings.service_release:
            info["release"] = settings.service_release
        lifecycle: Lifecycle | None = None
        metrics = Metrics.local() if listener is not None else Metrics.disabled()
        if settings.service_namespace:
            if registry_redis is not redis:
                await wait_until_reachable(
                    registry_redis,
                    what=describe_client(registry_redis),
                    within=settings.startup_timeout,
                )
            keys = ServiceKeys(settings.service_namespace)
            lifecycle = Lifecycle(
                registry_redis,
                keys,
                service=self.service.name,
                info=info,
                policy=LifecyclePolicy(
                    expire=settings.service_expire,
                    renew=settings.service_renew,
                    check=settings.service_check,
                    capacity=settings.service_capacity,
                    outlive_data_loss=getattr(self.service, "outlive_data_loss", False),
                ),
                outage=registry_outage,
                label=settings.service_label,
                standby=settings.standby,
            )
            await lifecycle.register()
            metrics = Metrics(
                registry_redis, keys, registry_outage, release=settings.service_release
            )

        instance_id = lifecycle.instance_id if lifecycle else None
        ctx = Context(redis, target, self.shutdown, metrics, instance_id, outage)
        log.info("%s started on %s", self.service.name, describe_url(settings.redis))
        if exposition is not None:
            exposition.attach(metrics, instance_id)
            health.started(self._probe_clients(), lifecycle)
        try:
            await self._work(ctx, lifecycle, listening)
        finally:
            await self._bookkeeping(metrics, lifecycle)
        log.info("%s stopped (%s)", self.service.name, self.shutdown.reason)
        return self.shutdown.exit_code

    def _own_metrics(
        self, health: Health
    ) -> tuple[ProcessExposition | None, MetricsListener | None]:
        """The ``--metrics-port`` listener (``/metrics``, ``/healthz``, ``/readyz``), bound (a
        port in use is a ConfigError), or None."""
        port = self.settings.metrics_port
        if port is None:
            return None, None
        exposition = ProcessExposition(self.service.name, self.settings.service_namespace)
        listener = MetricsListener(
            self.settings.metrics_host,
            port,
            exposition.render,
            probes={"/healthz": health.live, "/readyz": health.ready},
        )
        listener.bind()
        return exposition, listener

    def _probe_clients(self) -> list[AnyRedis]:
        """Clients of their own for the readiness PINGs (a probe never waits behind, or cuts
        short, a command of the service's), one per Redis the service uses."""
        urls = [self.settings.redis]
        if self.settings.service_redis:
            urls.append(self.settings.service_redis)
        clients: list[AnyRedis] = []
        for url in dict.fromkeys(urls):
            target = parse_redis_url(url, cluster=self.settings.cluster)
            client = connect(target, socket_timeout=_PROBE_TIMEOUT, connect_timeout=_PROBE_TIMEOUT)
            self.clients.append(client)
            clients.append(client)
        return clients

    def _stale_after(self) -> float:
        """How long the registry watcher may go without an attempt before the process counts as
        stuck: twice the longest an attempt and the wait before it can take (the check interval
        or the longest backoff, a connect and a socket timeout)."""
        settings = self.settings
        attempt = _CONNECT_TIMEOUT + settings.pop_timeout + _SOCKET_SLACK
        return 2.0 * (max(settings.service_check, Backoff().cap) + attempt)

    async def _work(
        self, ctx: Context, lifecycle: Lifecycle | None, listening: asyncio.Task[None] | None
    ) -> None:
        side: list[asyncio.Task[None]] = [
            asyncio.create_task(ctx.metrics.run(self.shutdown, self.settings.metrics_interval)),
        ]
        if listening is not None:
            side.append(listening)
        if lifecycle is not None:
            side.append(asyncio.create_task(lifecycle.watch(self.shutdown)))
        work = asyncio.create_task(self._run(ctx, lifecycle))
        stopped = asyncio.create_task(self.shutdown.wait())
        try:
            pending: set[asyncio.Future[None]] = {work, stopped, *side}
            while not stopped.done() and not work.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._check_failed(task)
            if not self.shutdown.requested:
                self.shutdown.request(f"{self.service.name} work ended")
            grace = self.settings.pop_timeout + _GRACE
            try:
                async with asyncio.timeout(grace):
                    await asyncio.wait({work})
            except TimeoutError:
                log.warning("work did not stop within %.1fs: cancelling it", grace)
            self._check_failed(work)
        finally:
            for task in (work, stopped, *side):
                task.cancel()
            await asyncio.gather(work, stopped, *side, return_exceptions=True)
            for task in side:
                self._check_failed(task)

    async def _run(self, ctx: Context, lifecycle: Lifecycle | None) -> None:
        """The service's work; in standby mode, only once activated."""
        if lifecycle is not None and lifecycle.standby:
            log.info("%s standing by for activation", self.service.name)
            if not await lifecycle.stand_by(self.shutdown, self.settings.pop_timeout):
                return
        await self.service.run(ctx)

    def _check_failed(self, task: asyncio.Future[None]) -> None:
        if not task.done() or task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        if isinstance(exc, MpushError):
            self.shutdown.request(str(exc), exit_code=for_error(exc))
            raise exc
        log.error("unexpected failure: %r", exc, exc_info=exc)
        self.shutdown.request(f"failure: {exc!r}", exit_code=Exit.FAILURE)
        raise MpushError(f"unexpected failure: {exc!r}") from exc

    async def _bookkeeping(self, metrics: Metrics, lifecycle: Lifecycle | None) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("final metrics flush", metrics.flush)
        ]
        if lifecycle is not None:
            steps.append(("deregistration", lifecycle.deregister))
        for what, step in steps:
            try:
                async with asyncio.timeout(_BOOKKEEPING_TIMEOUT):
                    await step()
            except Exception as exc:  # best effort: registrations expire by themselves
                log.warning("%s failed: %r", what, exc)
