"""The rcontrol commands that are not services: ``apply``, ``scale``, ``delete``, ``status``,
``export``, ``rollout``, ``rollback``, ``drain`` and ``uncordon``.

Each takes its settings and returns the exit code; ``cli.app`` registers them (``agent`` and
``controller`` are services, run by the runner). What a script reads goes to stdout; errors go to
stderr as one line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rich.console import Console

from mpush.cli.rcontrol_render import render
from mpush.config import (
    RcontrolApplySettings,
    RcontrolDeleteSettings,
    RcontrolDrainSettings,
    RcontrolExportSettings,
    RcontrolRollbackSettings,
    RcontrolRolloutSettings,
    RcontrolScaleSettings,
    RcontrolSettings,
    RcontrolStatusSettings,
    RcontrolUncordonSettings,
)
from mpush.config.base import checked_elsewhere
from mpush.connection import AnyRedis, connect, describe_url, parse_redis_url
from mpush.errors import ConfigError, MpushError
from mpush.exits import Exit, for_error
from mpush.keys import RcontrolKeys
from mpush.orchestration.kubernetes.declarations import read_declarations
from mpush.orchestration.kubernetes.export import ExportOptions, export_kubernetes
from mpush.orchestration.rcontrol.events import latest
from mpush.orchestration.rcontrol.spec import (
    Deployment,
    Spec,
    check_settings,
    parse_spec,
    read_spec,
)
from mpush.orchestration.rcontrol.state import SETTLED
from mpush.orchestration.rcontrol.store import (
    apply_spec,
    check_slots,
    delete_deployment,
    drain_host,
    read_declaration,
    read_snapshot,
    rollback_deployment,
    scale_deployment,
)
from mpush.orchestration.rcontrol.view import status_view
from mpush.retry import outage_of, retrying, wait_until_reachable

__all__ = [
    "apply",
    "delete",
    "drain",
    "export",
    "rollback",
    "rollout",
    "scale",
    "status",
    "uncordon",
]

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
            render(view, Console(soft_wrap=True))
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


def rollout(settings: RcontrolRolloutSettings) -> int:
    """Declare a new release of one deployment (its declaration changed as the flags say, or as
    a file declares it); with ``--wait``, wait for the rollout to end."""

    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            name = settings.name
            current = await read_declaration(redis, keys, name)
            new = _rolled(settings, current.deployment)
            spec = Spec(deployments={name: new})
            check_settings(spec, namespace=settings.namespace, redis=settings.redis)
            if new.release == current.release:
                _out(f"deployment {name}: release {current.release} unchanged: nothing to roll out")
                return Exit.OK
            await apply_spec(redis, keys, spec, by=_by("rollout"))
            _out(
                f"deployment {name}: rollout {current.release} -> {new.release} "
                f"({new.run.describe()}; max_surge {new.max_surge}, "
                f"max_unavailable {new.max_unavailable})"
            )
            if not settings.wait:
                return Exit.OK
            return await _wait_rollout(redis, keys, name, new.release, settings.wait)

        return _with_redis(settings, work)

    return _guarded("rollout", action)


def _rolled(settings: RcontrolRolloutSettings, current: Deployment) -> Deployment:
    """The declaration ``rollout`` makes of ``current``; ConfigError naming a bad key."""
    name = settings.name
    if settings.file is not None:
        found = read_spec(settings.file).deployments.get(name)
        if found is None:
            raise ConfigError("file", f"{settings.file} declares no [deployments.{name}]")
        return found
    data = current.model_dump(mode="json")
    table = dict(data["settings"])
    for change in settings.changes:
        key, _, value = change.partition("=")
        table[key] = _value(value)
    for key in settings.removals:
        if key not in table:
            raise ConfigError("unset", f"deployment {name} has no setting {key!r}")
        del table[key]
    data["settings"] = table
    if settings.git is not None:
        source = {"git": settings.git, "branch": settings.branch, "tag": settings.tag}
        source["commit"] = settings.commit
        data["source"] = {k: v for k, v in source.items() if v is not None}
    return parse_spec({"deployments": {name: data}}).deployments[name]


def _value(text: str) -> Any:
    """A setting's value as TOML reads it (``5``, ``true``, ``["a", "b"]``), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


async def _wait_rollout(
    redis: AnyRedis, keys: RcontrolKeys, name: str, release: str, within: float
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    outage = outage_of(f"redis of rcontrol {keys.namespace}")
    seen = ""
    while loop.time() < deadline:
        declaration = await retrying(
            lambda: read_declaration(redis, keys, name), outage=outage, deadline=deadline
        )
        rollout = declaration.rollout
        if rollout is None or release not in (rollout.old, rollout.new):
            _err("rollout", f"deployment {name} was declared again meanwhile")
            return Exit.FAILURE
        if rollout.state != seen:
            seen = rollout.state
            _out(f"deployment {name}: {rollout.state}: {rollout.why}")
        if rollout.state in SETTLED:
            return Exit.OK if rollout.state == "complete" else Exit.FAILURE
        if rollout.state == "rolling-back":
            return Exit.FAILURE
        await asyncio.sleep(0.25)
    _err("rollout", f"deployment {name}: still {seen} after {within:g}s")
    return Exit.NO_ANSWER


def rollback(settings: RcontrolRollbackSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            before = await rollback_deployment(redis, keys, settings.name, by=_by("rollback"))
            _out(
                f"deployment {settings.name}: rollback {before.release} -> "
                f"{before.previous_release}"
            )
            return Exit.OK

        return _with_redis(settings, work)

    return _guarded("rollback", action)


def drain(settings: RcontrolDrainSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            host = settings.host
            if await drain_host(redis, keys, host, drain=True, by=_by("drain")):
                _out(f"host {host}: drained (its instances move away; uncordon takes it back)")
            else:
                _out(f"host {host}: drained already")
            return Exit.OK

        return _with_redis(settings, work)

    return _guarded("drain", action)


def uncordon(settings: RcontrolUncordonSettings) -> int:
    def action() -> int:
        async def work(redis: AnyRedis, keys: RcontrolKeys) -> int:
            host = settings.host
            if await drain_host(redis, keys, host, drain=False, by=_by("uncordon")):
                _out(f"host {host}: takes instances again")
            else:
                _out(f"host {host}: was not drained")
            return Exit.OK

        return _with_redis(settings, work)

    return _guarded("uncordon", action)
