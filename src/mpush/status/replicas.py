"""Replicas of rcontrol's deployments in a namespace: desired, ready and standby, per deployment,
and their one way out to Prometheus (``replica_families``: ``mpush_deployment_replicas_desired``,
``…_ready``, ``…_standby``, labelled ``namespace`` and ``deployment``).

Reading them is rcontrol's business: whether an instance counts as ready is decided by rcontrol's
read model (``mpush.orchestration.rcontrol``: its declarations, assignments, agents' reports and
registrations), which sits in a layer above this one. So a ``ReplicaReader`` is handed down by
whoever runs the read — the ``mpush`` command gives ``mpush.orchestration.rcontrol.view
.read_replicas`` to ``mpush exporter`` and ``mpush status`` — and without one no replicas are read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from mpush.connection import AnyRedis

__all__ = ["ReplicaReader", "Replicas", "replica_families"]


@dataclass(frozen=True)
class Replicas:
    deployment: str
    desired: int  # declared replicas
    ready: int  # running and serving
    standby: int  # started, connected, waiting to be activated


# Reads the replicas of every rcontrol deployment of a namespace (the Redis, the namespace).
ReplicaReader = Callable[[AnyRedis, str], Awaitable[list["Replicas"]]]


def replica_families(namespace: str, replicas: Sequence[Replicas]) -> Iterator[GaugeMetricFamily]:
    """Three gauge families, a series per deployment in each."""
    labels = ["namespace", "deployment"]
    desired, ready, standby = (
        GaugeMetricFamily(f"mpush_deployment_replicas_{name}", documentation, labels=labels)
        for name, documentation in (
            ("desired", "Replicas a deployment declares."),
            ("ready", "Replicas of a deployment running and serving."),
            ("standby", "Standby instances of a deployment, waiting to be activated."),
        )
    )
    for entry in sorted(replicas, key=lambda r: r.deployment):
        values = [namespace, entry.deployment]
        desired.add_metric(values, float(entry.desired))
        ready.add_metric(values, float(entry.ready))
        standby.add_metric(values, float(entry.standby))
    yield from (desired, ready, standby)
