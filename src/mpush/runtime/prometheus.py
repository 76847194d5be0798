"""mpush's metrics in Prometheus's terms, built with the ``prometheus_client`` library.

A metrics hash (``<ns>:metrics:<name>``, or what one process gathered under ``name``) becomes:

- a histogram ``<prefix>_observations`` labelled ``metric="<name>"`` when the hash has a ``sum``:
  ``_bucket`` series with ``le`` = 0.1, 0.2 … 1.0 and ``+Inf``, cumulative, ``_sum`` and
  ``_count``. ``le`` is a *fraction of the metric's scale* T (a timeout for response times, the
  batch size for a move): ``histoK`` counts values in ``[K/100·T, (K+10)/100·T)``, so the bucket
  ``le="0.3"`` holds histo0 + histo10 + histo20. The hash keeps only the latest writer's T
  (``histo_scale``, not exported: each writer has its own, every request and tracked message
  carries its timeout), so buckets stay fractions, which are exact. ``histo100`` (values ≥ T)
  lies only in ``+Inf``, whose count is the hash's ``count``. A metric observed without a scale
  has only the ``+Inf`` bucket.
- a gauge ``<prefix>_observation_max`` from ``max``;
- a counter ``<prefix>_events_total`` labelled ``event="<field>"`` for every other field (the
  plain counters, and ``count`` of a hash that has no ``sum``).

``ServiceCollector`` is what one process serves on its ``--metrics-port``: everything it observed
since it started (written to Redis or not yet), what it holds unwritten, and who it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from mpush.runtime.metrics import Metrics
from mpush.runtime.scrape import Exposition

__all__ = [
    "BUCKET_BOUNDS",
    "HashFamilies",
    "ProcessExposition",
    "ServiceCollector",
    "buckets_of",
    "expose",
]

# (histo field, upper bound as a fraction of the metric's scale) for every finite bucket.
BUCKET_BOUNDS: tuple[tuple[str, str], ...] = tuple(
    (f"histo{k}", f"{(k + 10) / 100:.1f}") for k in range(0, 100, 10)
)
_HISTO = re.compile(r"histo\d+")
_SHAPE = frozenset({"count", "sum", "max", "histo_scale"})
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def buckets_of(fields: Mapping[str, float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a metrics hash, ending in ``("+Inf", count)``."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for name, bound in BUCKET_BOUNDS:
        running += fields.get(name, 0.0)
        buckets.append((bound, running))
    running += fields.get("histo100", 0.0)
    if not any(_HISTO.fullmatch(name) for name in fields):
        buckets = []  # observed without a scale: only the total is known
    buckets.append(("+Inf", max(fields.get("count", running), running)))
    return buckets


def expose(registry: Collector, accept: str = "") -> Exposition:
    """``registry`` in the format the ``Accept`` header asks for (OpenMetrics or the text format);
    a header prometheus_client cannot read gets the text format."""
    try:
        encoder, content_type = choose_encoder(accept)
    except Exception:  # e.g. "text/plain; version=x.y" makes it compare str with int
        encoder, content_type = generate_latest, _TEXT_FORMAT
    return Exposition(encoder(registry), content_type)


@dataclass
class HashFamilies:
    """The three families that metrics hashes become, gathered one hash at a time.

    ``labels`` name the labels every series carries before ``metric`` (``namespace``, or
    ``service``); ``add`` takes their values.
    """

    prefix: str
    labels: Sequence[str]
    observations: HistogramMetricFamily = field(init=False)
    peaks: GaugeMetricFamily = field(init=False)
    events: CounterMetricFamily = field(init=False)

    def __post_init__(self) -> None:
        labels = [*self.labels, "metric"]
        self.observations = HistogramMetricFamily(
            f"{self.prefix}_observations",
            "Observations of a metric; le is a fraction of the metric's scale (its timeout, or "
            "the batch size of a move), _sum is in the metric's own unit.",
            labels=labels,
        )
        self.peaks = GaugeMetricFamily(
            f"{self.prefix}_observation_max", "Largest value a metric observed.", labels=labels
        )
        self.events = CounterMetricFamily(
            f"{self.prefix}_events",
            "Plain counters of a metric, one series per field (event).",
            labels=[*labels, "event"],
        )

    def add(self, values: Sequence[str], metric: str, fields: Mapping[str, float]) -> None:
        """Add one metrics hash (``count``, ``sum``, ``max``, ``histoK`` and counters)."""
        labels = [*values, metric]
        observed = "sum" in fields
        if observed:
            self.observations.add_metric(labels, buckets_of(fields), fields["sum"])
        if "max" in fields:
            self.peaks.add_metric(labels, fields["max"])
        for name, value in sorted(fields.items()):
            if (name in _SHAPE and (observed or name != "count")) or _HISTO.fullmatch(name):
                continue
            self.events.add_metric([*labels, name], value)

    def families(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily | CounterMetricFamily]:
        yield from (self.observations, self.peaks, self.events)


class ServiceCollector(Collector):
    """One process's own figures: what its ``Metrics`` gathered, and who it is."""

    def __init__(self, metrics: Metrics, service: str, namespace: str | None) -> None:
        self._metrics = metrics
        self._service = service
        self._namespace = namespace or ""
        self.instance_id: int | None = None  # known once registered

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        labels = ["service", "namespace"]
        values = [self._service, self._namespace]
        info = GaugeMetricFamily(
            "mpush_service_info",
            "This process: service, namespace and instance id (1).",
            labels=[*labels, "instance_id"],
        )
        info.add_metric([*values, "" if self.instance_id is None else str(self.instance_id)], 1.0)
        yield info
        unwritten = GaugeMetricFamily(
            "mpush_service_unwritten",
            "Observations and counter increments gathered and not yet written to Redis.",
            labels=[*labels, "metric"],
        )
        families = HashFamilies("mpush_service", labels)
        for name, (total, pending) in sorted(self._metrics.snapshot().items()):
            families.add(values, name, total)
            unwritten.add_metric([*values, name], pending)
        yield from families.families()
        yield unwritten


class ProcessExposition:
    """What ``--metrics-port`` serves: the process's own figures (``ServiceCollector``) and
    prometheus_client's process, platform and garbage-collector collectors."""

    def __init__(self, service: str, namespace: str | None) -> None:
        self._service = service
        self._namespace = namespace
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)
        self._own: ServiceCollector | None = None

    def attach(self, metrics: Metrics, instance_id: int | None) -> None:
        """Serve ``metrics`` from now on (the service's, once it has registered)."""
        own = ServiceCollector(metrics, self._service, self._namespace)
        own.instance_id = instance_id
        if self._own is not None:
            self._registry.unregister(self._own)
        self._registry.register(own)
        self._own = own

    async def render(self, headers: Mapping[str, str]) -> Exposition:
        return expose(self._registry, headers.get("accept", ""))
