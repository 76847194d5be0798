"""exporter: a whole namespace's figures on ``/metrics`` for Prometheus. See docs/prometheus.md.

Each scrape is answered from one read of Redis (``mpush.status.collect``: pipelined, bounded by
``max_queues``, ``max_metrics`` and a SCAN budget) made at most every ``cache_ttl`` seconds:
scrapes that arrive meanwhile, or while a read is under way, share it, so a storm of scrapes
costs Redis one read per ``cache_ttl``. A read is one attempt of at most ``scrape_timeout`` seconds
(the next scrape is the retry); when Redis is out of reach the outage is logged once
(``mpush.retry``) and scrapes are answered with ``mpush_exporter_redis_up 0`` and the exporter's
own figures, never stale ones.

The listener (``mpush.runtime.scrape``) has a receive deadline (``request_timeout``), head and
body limits, and a cap on open connections (``max_connections``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from mpush.config.exporter import ExporterSettings
from mpush.connection import AnyRedis, RedisTarget, is_transient
from mpush.errors import TransientError
from mpush.retry import Stopped, retrying
from mpush.runtime.prometheus import expose
from mpush.runtime.runner import Context
from mpush.runtime.scrape import Exposition, ListenerLimits, MetricsListener
from mpush.status.names import MetricNames
from mpush.status.prometheus import NamespaceCollector
from mpush.status.replicas import ReplicaReader
from mpush.status.report import ReadLimits, StatusReport, collect

__all__ = ["Exporter", "create"]

log = logging.getLogger(__name__)

_BODIES = 4  # expositions kept per read, one per format asked for


def create(settings: ExporterSettings, replicas: ReplicaReader | None = None) -> Exporter:
    """The exporter; ``replicas`` reads rcontrol's replicas (the ``mpush`` command gives
    rcontrol's reader: a service cannot import orchestration)."""
    return Exporter(settings, replicas)


class _Reads:
    """How reading the namespace went, for the exporter's own series."""

    def __init__(self) -> None:
        self.up = False
        self.seconds = 0.0
        self.total = 0
        self.failures = 0
        self.scrapes = 0
        self.last_error = ""


class _OwnCollector(Collector):
    def __init__(self, namespace: str, reads: _Reads, listener: MetricsListener) -> None:
        self._namespace = namespace
        self._reads = reads
        self._listener = listener

    def collect(self) -> Iterator[Metric]:
        labels, values = ["namespace"], [self._namespace]
        reads = self._reads
        for name, documentation, value in (
            ("redis_up", "1 when the last read of the namespace succeeded.", float(reads.up)),
            ("read_seconds", "How long the last read of the namespace took.", reads.seconds),
        ):
            gauge = GaugeMetricFamily(f"mpush_exporter_{name}", documentation, labels=labels)
            gauge.add_metric(values, value)
            yield gauge
        for name, documentation, count in (
            ("reads", "Reads of the namespace.", reads.total),
            ("read_failures", "Reads of the namespace that failed.", reads.failures),
            ("scrapes", "Scrapes of /metrics answered.", reads.scrapes),
        ):
            counter = CounterMetricFamily(f"mpush_exporter_{name}", documentation, labels=labels)
            counter.add_metric(values, float(count))
            yield counter
        refused = CounterMetricFamily(
            "mpush_exporter_refused",
            "Connections refused or dropped by the listener, by reason.",
            labels=[*labels, "reason"],
        )
        for reason, count in sorted(self._listener.refused.items()):
            refused.add_metric([*values, reason], float(count))
        yield refused


class Exporter:
    """The exporter service."""

    name = "exporter"

    def __init__(self, settings: ExporterSettings, replicas: ReplicaReader | None = None) -> None:
        self.settings = settings
        self._replicas = replicas
        namespace = settings.service_namespace
        assert namespace is not None, "ExporterSettings requires a namespace"
        self.namespace = namespace
        self.listener = MetricsListener(
            settings.host,
            settings.port,
            self._render,
            limits=ListenerLimits(
                receive_timeout=settings.request_timeout,
                max_connections=settings.max_connections,
            ),
            setting="port",
        )
        self._limits = ReadLimits(
            instances=settings.service_capacity,
            queues=settings.max_queues,
            metrics=settings.max_metrics,
        )
        self._names = MetricNames(
            namespace, limit=settings.max_metrics, budget=settings.scan_budget
        )
        self._reads = _Reads()
        self._figures = NamespaceCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._figures)
        self._registry.register(_OwnCollector(namespace, self._reads, self.listener))
        self._ctx: Context | None = None
        self._read: asyncio.Task[None] | None = None
        self._fresh_until = float("-inf")
        self._bodies: dict[str, Exposition] = {}

    def registry_info(self) -> Mapping[str, str]:
        host, port = self.listener.address
        return {"metrics": f"{host}:{port}"}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        self.listener.bind()  # a port in use stops the exporter before it registers

    async def run(self, ctx: Context) -> None:
        self._ctx = ctx
        log.info("serving %s on http://%s:%d/metrics", self.namespace, *self.listener.address)
        try:
            await self.listener.serve(ctx.shutdown)
        finally:
            if self._read is not None:
                self._read.cancel()

    async def _render(self, headers: Mapping[str, str]) -> Exposition:
        await self._refresh()
        self._reads.scrapes += 1
        accept = headers.get("accept", "")
        body = self._bodies.get(accept)
        if body is None:
            body = expose(self._registry, accept)
            if len(self._bodies) < _BODIES:
                self._bodies[accept] = body
        return body

    async def _refresh(self) -> None:
        """Read the namespace unless the last read is fresh; every scrape waits on one read."""
        if asyncio.get_running_loop().time() < self._fresh_until:
            return
        if self._read is None:
            self._read = asyncio.create_task(self._read_namespace())
        await asyncio.shield(self._read)  # a client that goes away does not cancel the read

    async def _read_namespace(self) -> None:
        ctx = self._ctx
        assert ctx is not None, "run() comes first"
        loop = asyncio.get_running_loop()
        started = loop.time()
        report: StatusReport | None = None
        try:
            async with asyncio.timeout(self.settings.scrape_timeout):
                # One attempt (deadline: now): the next scrape is the retry. The outage is
                # recorded and logged once, and its end too, like every loop's.
                report = await retrying(
                    self._collect, outage=ctx.outage, shutdown=ctx.shutdown, deadline=started
                )
            self._reads.last_error = ""
        except (TransientError, TimeoutError, Stopped) as exc:
            if isinstance(exc, TimeoutError):
                ctx.outage.failed(
                    TransientError(f"no answer within {self.settings.scrape_timeout:g}s")
                )
        except Exception as exc:  # a key of the wrong type, an ACL refusal: told once, not fatal
            if is_transient(exc):
                ctx.outage.failed(exc)
            elif repr(exc) != self._reads.last_error:
                log.warning("reading %s failed: %r", self.namespace, exc)
            self._reads.last_error = repr(exc)
        finally:
            now = loop.time()
            self._figures.report = report
            self._reads.up = report is not None
            self._reads.total += 1
            self._reads.failures += report is None
            self._reads.seconds = now - started
            self._fresh_until = now + self.settings.cache_ttl
            self._bodies = {}
            self._read = None

    async def _collect(self) -> StatusReport:
        assert self._ctx is not None
        return await collect(
            self._ctx.redis,
            self.namespace,
            self.settings.queue,
            limits=self._limits,
            names=self._names,
            replicas=self._replicas,
        )
