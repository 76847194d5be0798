"""``rcontrol status`` as data: per deployment desired, ready and standby with every instance, per
host liveness, capacity and load, the controller holding the lease, and the latest events.

The JSON shape (``rcontrol status --json``; more fields may be added, none taken away)::

    {"namespace": NS, "now": <Redis time>,
     "controller": {"holder": "<owner>", "token": N} | null,
     "deployments": [{"name", "desired", "ready", "standby", "standby_desired", "release",
                      "run", "labels", "autoscale": {"min", "max"} | null,
                      "rollout": {"state", "old", "new", "started", "since", "why", "by"} | null,
                      "previous_release",
                      "instances": [{"id", "host", "pid", "state", "role",
                      "release", "restarts", "cpu", "service_id", "since", "code", "reason"}]}],
     "hosts": [{"name", "alive", "capacity", "running", "assigned", "labels", "load1",
                "mem_free", "mem_total", "cpus", "seen", "drained", "overloaded"}],
     "events": [{"id", "at", "kind", "deployment", "instance", "host", "why", "by"}]}

``ready`` counts active instances of the deployment that are ready; ``standby`` counts standby
instances registered and waiting; ``running`` counts a host's instances whose process runs.

``read_replicas`` gives the same desired, ready and standby counts to ``mpush exporter`` and
``mpush status`` (``mpush.status.replicas``), so a dashboard and ``rcontrol status`` agree.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mpush.connection import AnyRedis
from mpush.keys import RcontrolKeys
from mpush.orchestration.rcontrol.events import Event
from mpush.orchestration.rcontrol.state import (
    ACTIVE,
    ALIVE_STATES,
    STANDBY,
    Host,
    Snapshot,
    State,
)
from mpush.orchestration.rcontrol.store import read_snapshot
from mpush.status.replicas import Replicas

__all__ = ["read_replicas", "status_view"]


async def read_replicas(redis: AnyRedis, namespace: str) -> list[Replicas]:
    """Desired, ready and standby instances of every deployment of ``namespace``, counted as
    ``rcontrol status`` counts them (a deleted deployment still draining: desired 0)."""
    snapshot = await read_snapshot(redis, RcontrolKeys(namespace))
    view = status_view(snapshot, namespace, None)
    return [
        Replicas(entry["name"], entry["desired"], entry["ready"], entry["standby"])
        for entry in view["deployments"]
    ]


def status_view(snapshot: Snapshot, namespace: str, events: list[Event] | None) -> dict[str, Any]:
    deployments: dict[str, dict[str, Any]] = {}
    for name, declaration in snapshot.declarations.items():
        spec = declaration.deployment
        deployments[name] = {
            "name": name,
            "desired": declaration.replicas,
            "ready": 0,
            "standby": 0,
            "standby_desired": spec.standby,
            "release": declaration.release,
            "run": spec.run.describe(),
            "labels": spec.labels,
            "autoscale": None
            if spec.autoscale is None
            else {"min": spec.autoscale.min, "max": spec.autoscale.max},
            "rollout": None if declaration.rollout is None else declaration.rollout.model_dump(),
            "previous_release": declaration.previous_release,
            "instances": [],
        }
    running: Counter[str] = Counter()
    assigned: Counter[str] = Counter()
    for instance_id, placed in snapshot.assignments.items():
        a = placed.assignment
        if a is None:
            continue
        report = snapshot.report(instance_id)
        host = snapshot.hosts.get(a.host)
        state = snapshot.state(instance_id)
        if host is None or not host.alive:
            state = State.LOST
        assigned[a.host] += 1
        if state in ALIVE_STATES:
            running[a.host] += 1
        entry = deployments.setdefault(
            a.deployment,
            {
                "name": a.deployment,
                "desired": 0,
                "ready": 0,
                "standby": 0,
                "standby_desired": 0,
                "release": "",
                "run": a.run.describe(),
                "labels": {},
                "instances": [],
                "deleted": True,
            },
        )
        if a.role == ACTIVE and state == State.READY:
            entry["ready"] += 1
        if a.role == STANDBY and state == State.STANDBY:
            entry["standby"] += 1
        entry["instances"].append(
            {
                "id": instance_id,
                "host": a.host,
                "pid": None if report is None or state == State.LOST else report.pid,
                "state": state.value,
                "role": a.role,
                "release": a.release,
                "restarts": 0 if report is None else report.restarts,
                "cpu": 0.0 if report is None else round(report.cpu, 4),
                "service_id": "" if report is None else report.service_id,
                "since": None if report is None else report.since,
                "code": None if report is None else report.code,
                "reason": "" if report is None else report.reason,
            }
        )
    hosts = [
        {
            "name": host.name,
            "alive": host.alive,
            "capacity": host.capacity,
            "running": running[host.name],
            "assigned": assigned[host.name],
            "labels": host.labels,
            "load1": host.load1,
            "mem_free": host.mem_free,
            "mem_total": host.mem_total,
            "cpus": host.cpus,
            "seen": host.seen,
            "drained": host.name in snapshot.drained,
            "overloaded": host.overloaded,
        }
        for host in sorted(
            [*snapshot.hosts.values(), *(Host(h, alive=False) for h in _unseen(snapshot))],
            key=lambda h: h.name,
        )
    ]
    token, _, owner = snapshot.holder.partition(" ")
    view: dict[str, Any] = {
        "namespace": namespace,
        "now": snapshot.now,
        "controller": {"holder": owner, "token": int(token)} if token.isdigit() else None,
        "deployments": [deployments[name] for name in sorted(deployments)],
        "hosts": hosts,
    }
    if events is not None:
        view["events"] = [event.to_dict() for event in events]
    return view


def _unseen(snapshot: Snapshot) -> list[str]:
    """Drained hosts with no heartbeat and no instance (still shown: they are drained)."""
    return sorted(set(snapshot.drained) - set(snapshot.hosts))
