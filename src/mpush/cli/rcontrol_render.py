"""``rcontrol status`` as tables: deployments (with their rollouts), instances (with their
releases), hosts (drained, overloaded) and the latest events."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render"]


def render(view: dict[str, Any], console: Console) -> None:
    controller = view["controller"]
    leader = (
        f"controller: {controller['holder']} (token {controller['token']})"
        if controller
        else "controller: none holds the lease"
    )
    console.print(f"rcontrol in {view['namespace']} — {leader}")
    deployments = Table(title="deployments", title_justify="left")
    for column in ("name", "desired", "ready", "standby", "release", "rollout", "runs"):
        deployments.add_column(
            column,
            justify="right" if column in ("desired", "ready") else "left",
            overflow="fold" if column == "rollout" else "ellipsis",
        )
    instances = Table(title="instances", title_justify="left")
    for column in (
        "id", "host", "pid", "state", "role", "release", "restarts", "cpu", "registration",
    ):  # fmt: skip
        instances.add_column(column)
    for deployment in view["deployments"]:
        standby = f"{deployment['standby']}/{deployment['standby_desired']}"
        name = deployment["name"] + (" (deleted)" if deployment.get("deleted") else "")
        desired = str(deployment["desired"])
        scaling = deployment.get("autoscale")
        if scaling:
            desired += f" ({scaling['min']}..{scaling['max']})"
        deployments.add_row(
            name,
            desired,
            str(deployment["ready"]),
            standby,
            deployment["release"] or "-",
            _rollout(deployment.get("rollout")),
            deployment["run"],
        )
        for inst in deployment["instances"]:
            instances.add_row(
                inst["id"],
                inst["host"],
                "-" if inst["pid"] is None else str(inst["pid"]),
                inst["state"],
                inst["role"],
                inst["release"],
                str(inst["restarts"]),
                f"{inst['cpu'] * 100:.1f}%",
                inst["service_id"] or "-",
            )
    console.print(deployments)
    console.print(instances)
    hosts = Table(title="hosts", title_justify="left")
    for column in ("host", "alive", "capacity", "running", "load", "free memory", "labels"):
        hosts.add_column(column)
    for host in view["hosts"]:
        free = host["mem_free"]
        alive = "yes" if host["alive"] else "[red]dead[/]"
        if host.get("drained"):
            alive += ", drained"
        if host.get("overloaded"):
            alive += ", [yellow]overloaded[/]"
        hosts.add_row(
            host["name"],
            alive,
            str(host["capacity"]),
            str(host["running"]),
            "-" if host["load1"] is None else f"{host['load1']:.2f}",
            "-" if free is None else f"{free / 2**20:,.0f} MiB",
            ", ".join(f"{k}={v}" for k, v in host["labels"].items()) or "-",
        )
    console.print(hosts)
    if "events" in view:
        events = Table(title="events (oldest first)", title_justify="left")
        for column in ("time", "kind", "deployment", "instance", "host", "why"):
            events.add_column(column, overflow="fold")
        for event in view["events"]:
            at = event["at"]
            when = time.strftime("%H:%M:%S", time.localtime(at)) if at else "-"
            events.add_row(
                when,
                event["kind"],
                event["deployment"] or "-",
                event["instance"] or "-",
                event["host"] or "-",
                event["why"],
            )
        console.print(events)


def _rollout(rollout: dict[str, Any] | None) -> str:
    if not rollout:
        return "-"
    return f"{rollout['state']} {rollout['old']} -> {rollout['new']}"
