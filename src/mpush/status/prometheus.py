"""A namespace's figures in Prometheus's terms: what ``mpush exporter`` serves on ``/metrics`` and
``mpush status --prometheus`` prints. Names and labels are listed in docs/prometheus.md.

Every series carries ``namespace``. Metrics hashes become ``mpush_observations`` (a histogram),
``mpush_observation_max`` and ``mpush_events_total`` (``mpush.runtime.prometheus``); rcontrol's
replicas come from ``mpush.status.replicas``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from mpush.runtime.prometheus import HashFamilies, expose
from mpush.runtime.scrape import Exposition
from mpush.status.replicas import replica_families
from mpush.status.report import StatusReport

__all__ = ["NamespaceCollector", "exposition_of"]


class NamespaceCollector(Collector):
    """The families of one ``StatusReport``; ``report`` may be replaced between collections."""

    def __init__(self, report: StatusReport | None = None) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        report = self.report
        if report is None:
            return
        ns = report.namespace
        instances = GaugeMetricFamily(
            "mpush_instances",
            "Live registered instances per service.",
            labels=["namespace", "service"],
        )
        for service, count in report.instances_per_service().items():
            instances.add_metric([ns, service], float(count))
        yield instances
        stale = GaugeMetricFamily(
            "mpush_registry_stale_ids",
            "Ids on the registry list whose registration is gone.",
            labels=["namespace"],
        )
        stale.add_metric([ns], float(len(report.stale_ids)))
        yield stale
        queues = GaugeMetricFamily(
            "mpush_queue_length", "Length of a Redis list.", labels=["namespace", "queue"]
        )
        for queue, length in report.queues.items():
            queues.add_metric([ns, queue], float(length))
        yield queues
        families = HashFamilies("mpush", ["namespace"])
        for name, fields in report.metrics.items():
            families.add([ns], name, fields)
        yield from families.families()
        yield from _tracking(report)
        yield from replica_families(ns, report.replicas)
        truncated = GaugeMetricFamily(
            "mpush_read_truncated",
            "1 when the read of the namespace left some of this out, over a limit.",
            labels=["namespace", "what"],
        )
        for what in report.truncated:
            truncated.add_metric([ns, what], 1.0)
        yield truncated


def _tracking(report: StatusReport) -> Iterator[Metric]:
    figures = report.tracking
    if figures is None:
        return
    labels = ["namespace"]
    tracked = CounterMetricFamily(
        "mpush_tracked_messages", "Message ids handed out by tracking.", labels=labels
    )
    tracked.add_metric([report.namespace], float(figures.messages))
    yield tracked
    for name, documentation, value in (
        ("mpush_messages_in_flight", "Tracked messages not finished yet.", figures.in_flight),
        (
            "mpush_done_reports_waiting",
            "Done reports the monitor has not taken.",
            figures.reports_waiting,
        ),
        ("mpush_dead_letters", "Entries on the dead-letter list.", figures.dead_letters),
    ):
        family = GaugeMetricFamily(name, documentation, labels=labels)
        family.add_metric([report.namespace], float(value))
        yield family


def exposition_of(report: StatusReport, accept: str = "") -> Exposition:
    """``report`` in the Prometheus text format (or OpenMetrics, as ``accept`` asks)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NamespaceCollector(report))
    return expose(registry, accept)
