"""Replicas of rcontrol's deployments in a namespace: desired, ready and standby, per deployment.

Kept apart from the rest of ``mpush.status`` so that rcontrol's figures have one reader and one
way out to Prometheus (``replica_families``: ``mpush_deployment_replicas_desired``, ``…_ready``,
``…_standby``, labelled ``namespace`` and ``deployment``).

``read_replicas`` is where rcontrol's declared and observed state (``<ns>:rcontrol:…``, built by
``keys.py``) is read. Until rcontrol keeps that state it finds no deployments, and the families
are exported empty: dashboards and alerts can be written against the names already.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from mpush.connection import AnyRedis

__all__ = ["Replicas", "read_replicas", "replica_families"]


@dataclass(frozen=True)
class Replicas:
    deployment: str
    desired: int  # declared replicas
    ready: int  # running and serving
    standby: int  # started, connected, waiting to be activated


async def read_replicas(redis: AnyRedis, namespace: str) -> list[Replicas]:
    """The replicas of every rcontrol deployment of ``namespace``, by name.

    rcontrol keeps no state in Redis yet: there is nothing to read, so no deployments.
    """
    del redis, namespace  # read <ns>:rcontrol:… here once rcontrol writes it
    return []


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
