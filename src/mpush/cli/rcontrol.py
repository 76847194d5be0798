"""The rcontrol commands that are not services: ``apply``, ``scale``, ``delete``, ``status``,
``export``.

Each takes its settings and returns the exit code; ``cli.app`` registers them (``agent`` and
``controller`` are services, run by the runner). What a script reads goes to stdout; errors go to
stderr as one line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from mpush.config import (
    RcontrolApplySettings,
    RcontrolDeleteSettings,
    RcontrolExportSettings,
    RcontrolScaleSettings,
    RcontrolSettings,
    RcontrolStatusSettings,
)
from mpush.config.base import checked_elsewhere
from mpush.connection import AnyRedis, connect, describe_url, parse_redis_url
from mpush.errors import ConfigError, MpushError
from mpush.exits import Exit, for_error
from mpush.keys import RcontrolKeys
from mpush.orchestration.kubernetes.declarations import read_declarations
from mpush.orchestration.kubernetes.export import ExportOptions, export_kubernetes
from mpush.orchestration.rcontrol.events import latest
from mpush.orchestration.rcontrol.spec import check_settings, read_spec
from mpush.orchestration.rcontrol.store import (
    apply_spec,
    check_slots,
    delete_deployment,
    read_snapshot,
    scale_deployment,
)
from mpush.orchestration.rcontrol.view import status_view
from mpush.retry import wait_until_reachable

__all__ = ["apply", "delete", "export", "scale", "status"]

T = TypeVar("T")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(command: str, line: str) -> None:
    sys.stderr.write(f"mpush rcontrol {command}: {line}\n")


def _by(command: str) -> str:
    return f"rcontrol {command} on {socket.gethostname()}"


def _with_redis(
    settings: RcontrolSettings, work: Callable[[AnyRedis, RcontrolKeys], Awaitable[T]]
) -> T:
    keys = RcontrolKeys(settings.namespace)
    target = parse_redis_url(settings.redis, cluster=settings.cluster)
    if target.cluster:
        check_slots(keys)

    async def go() -> T:
        redis = connect(target, socket_timeout=10.0)
        try:
            await wait_until_reachable(
                redis, what=f"redis {describe_url(settings.redis)}", within=settings.startup_timeout
            )
            return await work(redis, keys)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def _guarded(command: str, action: Callable[[], int]) -> int:
    """Run ``action``; a ConfigError (or any mpush error) is one line on stderr and its code."""
    try:
        return action()
    except MpushError as exc:
        _err(command, str(exc))
        return for_error(exc)


def apply(settings: RcontrolApplySettings) -> int:
    """Check the whole file first (its settings against each service's model), then declare it
    in one transaction; print what changed."""

    def action() -> int:
        spec = read_spec(settings.file)
        check_settings(spec, namespace=settings.namespace, redis=settings.redis)
        if not spec.deployments:
            raise ConfigError("deployments", f"{settings.file} declares no [deployments.NAME]")

        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            changes = await apply_spec(redis, keys, spec, by=_by("apply"), dry_run=settings.dry_run)
            for change in changes:
                _out(change.line())
            changed = sum(1 for change in changes if change.kind != "unchanged")
            verb = "would change" if settings.dry_run else "changed"
            _out(f"{changed} of {len(changes)} deployments {verb}")
            return Exit.OK

        return _with_redis(settings, work)

    return _guarded("apply", action)


def scale(settings: RcontrolScaleSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            changed, before = await scale_deployment(
                redis, keys, settings.name, settings.replicas, by=_by("scale")
            )
            if changed:
                _out(f"deployment {settings.name}: replicas {before} -> {settings.replicas}")
            else:
                _out(f"deployment {settings.name}: replicas {before} (unchanged)")
            return Exit.OK

        return _with_redis(settings, work)

    return _guarded("scale", action)


def delete(settings: RcontrolDeleteSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            if await delete_deployment(redis, keys, settings.name, by=_by("delete")):
                _out(f"deployment {settings.name}: deleted (its instances stop gracefully)")
                return Exit.OK
            _err("delete", f"no deployment {settings.name!r} is declared in {keys.namespace}")
            return Exit.FAILURE

        return _with_redis(settings, work)

    return _guarded("delete", action)


def status(settings: RcontrolStatusSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> dict[str, Any]:
            snapshot = await read_snapshot(redis, keys)
            events = await latest(redis, keys, settings.count) if settings.events else None
            return status_view(snapshot, keys.namespace, events)

        view = _with_redis(settings, work)
        if settings.as_json:
            _out(json.dumps(view, indent=2, sort_keys=True))
        else:
            _render(view, Console(soft_wrap=True))
        return Exit.OK

    return _guarded("status", action)


def export(settings: RcontrolExportSettings) -> int:
    """Check the whole file as ``apply`` does, then write its manifests (stdout, or --output and a
    summary). The Secrets to create and what did not map go to stderr too, whoever reads stdout."""

    def action() -> int:
        declarations = read_declarations(settings.file)
        spec = declarations.spec
        if not spec.deployments:
            raise ConfigError("deployments", f"{settings.file} declares no [deployments.NAME]")
        options = ExportOptions(
            namespace=settings.namespace,
            redis=settings.redis,
            cluster=settings.cluster,
            image=settings.image,
            redis_secrets=settings.redis_secrets,
            kube_namespace=settings.kube_namespace,
            probe_port=settings.probe_port,
            cpu_request=settings.cpu_request,
            memory_request=settings.memory_request,
            memory_limit=settings.memory_limit,
            source=settings.file.name,
        )
        with checked_elsewhere():  # the paths a table names are in the image, not here
            check_settings(spec, namespace=settings.namespace, redis=settings.redis)
            manifests = export_kubernetes(declarations, options)
        text = manifests.yaml()
        if settings.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            try:
                settings.output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    "output", f"cannot write {str(settings.output)!r}: {exc}"
                ) from None
            kinds = [document["kind"] for document in manifests.documents]
            counted = ", ".join(f"{kinds.count(kind)} {kind}" for kind in dict.fromkeys(kinds))
            _out(f"wrote {settings.output}: {counted}")
        for line in manifests.secret_commands():
            sys.stderr.write(f"secret needed: {line}\n")
        for note in manifests.notes:
            sys.stderr.write(f"note: {note}\n")
        return Exit.OK

    return _guarded("export", action)


def _render(view: dict[str, Any], console: Console) -> None:
    controller = view["controller"]
    leader = (
        f"controller: {controller['holder']} (token {controller['token']})"
        if controller
        else "controller: none holds the lease"
    )
    console.print(f"rcontrol in {view['namespace']} — {leader}")
    deployments = Table(title="deployments", title_justify="left")
    for column in ("name", "desired", "ready", "standby", "runs"):
        deployments.add_column(
            column, justify="right" if column in ("desired", "ready") else "left"
        )
    instances = Table(title="instances", title_justify="left")
    for column in ("id", "host", "pid", "state", "role", "restarts", "cpu", "registration"):
        instances.add_column(column)
    for deployment in view["deployments"]:
        standby = f"{deployment['standby']}/{deployment['standby_desired']}"
        name = deployment["name"] + (" (deleted)" if deployment.get("deleted") else "")
        deployments.add_row(
            name, str(deployment["desired"]), str(deployment["ready"]), standby, deployment["run"]
        )
        for inst in deployment["instances"]:
            instances.add_row(
                inst["id"],
                inst["host"],
                "-" if inst["pid"] is None else str(inst["pid"]),
                inst["state"],
                inst["role"],
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
        hosts.add_row(
            host["name"],
            "yes" if host["alive"] else "[red]dead[/]",
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
