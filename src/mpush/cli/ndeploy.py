"""The ndeploy commands that are not services: ``deploy`` (submit and wait), ``list``, ``rollback``.

Each takes its settings and returns the exit code; ``cli`` registers them. Lines a script reads
(the deploy dir, last) go to stdout as plain text; progress goes to stderr, as a spinner when
stderr is a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

from rich.console import Console
from rich.status import Status
from rich.table import Table

from mpush.config import NdeployListSettings, NdeployRequestSettings, NdeployRollbackSettings
from mpush.connection import connect, describe_url, parse_redis_url
from mpush.exits import Exit
from mpush.keys import NdeployKeys
from mpush.orchestration.ndeploy.layout import DeployRoot, LayoutError
from mpush.orchestration.ndeploy.queue import check_cluster_namespace
from mpush.orchestration.ndeploy.requester import submit, wait_for_response
from mpush.retry import wait_until_reachable

__all__ = ["deploy", "rollback", "show"]

log = logging.getLogger(__name__)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def deploy(settings: NdeployRequestSettings) -> int:
    """Submit a request, wait for the response, print the deploy dir last."""
    target = parse_redis_url(settings.redis, cluster=settings.cluster)
    if target.cluster:
        check_cluster_namespace(settings.namespace)
    keys = NdeployKeys(settings.namespace)
    fields = {"git": settings.git, "branch": settings.branch, "commit": settings.commit}
    fields["tag"] = settings.tag
    request = {name: value for name, value in fields.items() if value}

    async def go() -> int:
        redis = connect(target, socket_timeout=10.0)
        try:
            await wait_until_reachable(
                redis, what=f"redis {describe_url(settings.redis)}", within=settings.startup_timeout
            )
            request_id = await submit(redis, keys, request)
            _out(f"request {request_id} queued on {keys.queue}")
            began = time.monotonic()
            with _spinner(f"deploy {request_id}: queued") as update:
                response = await wait_for_response(
                    redis,
                    keys,
                    request_id,
                    within=settings.wait,
                    on_step=lambda step: update(
                        f"deploy {request_id}: {step or 'queued'} ({time.monotonic() - began:.0f}s)"
                    ),
                )
        finally:
            await redis.aclose()
        return _report(request_id, keys, response, settings.wait)

    return asyncio.run(go())


def _report(
    request_id: int, keys: NdeployKeys, response: dict[str, str] | None, wait: float
) -> int:
    if response is None:
        _err(
            f"no response to request {request_id} within {wait:g}s; it stays queued on "
            f"{keys.queue} (see {keys.response(request_id)} later)"
        )
        return Exit.NO_ANSWER
    if "error" in response or "deployDir" not in response:
        step = response.get("failedStep", "?")
        _err(f"request {request_id} failed at {step}: {response.get('error', '(no error text)')}")
        return Exit.FAILURE
    took = _seconds_between(response.get("cloned"), response.get("installed"))
    _out(
        f"deployed by instance {response.get('service', '?')}: commit "
        f"{response.get('actualCommit', '?')}"
        + (f", venv and install took {took:.1f}s" if took else "")
    )
    _out(response["deployDir"])
    return Exit.OK


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return float(end or "") - float(start or "")
    except ValueError:
        return None


def _err(line: str) -> None:
    sys.stderr.write(f"mpush ndeploy: {line}\n")


@contextlib.contextmanager
def _spinner(text: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr when it is a terminal; elsewhere a no-op."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _text: None
        return
    with Status(text, console=console) as status:
        yield status.update


def show(settings: NdeployListSettings) -> int:
    """Print this host's deploys of the namespace."""
    root = DeployRoot(settings.root, settings.namespace)
    records = root.records()
    current = root.current_id()
    if settings.as_json:
        deploys = [{**asdict(record), "current": record.id == current} for record in records]
        _out(json.dumps({"root": str(root.path), "current": current, "deploys": deploys}))
        return Exit.OK
    if not records:
        _out(f"no deploys in {root.path}")
        return Exit.OK
    table = Table(title=str(root.path))
    for column in ("", "id", "ref", "actual commit", "installed"):
        table.add_column(column, no_wrap=True)
    table.add_column("git", overflow="fold")
    for record in records:
        ref = (
            f"tag {record.tag}"
            if record.tag
            else " @ ".join(part for part in (record.branch, record.commit) if part) or "-"
        )
        table.add_row(
            "*" if record.id == current else "",
            str(record.id),
            ref,
            record.actual_commit[:12],
            _when(record.installed),
            record.git,
        )
    Console(soft_wrap=True).print(table)
    return Exit.OK


def _when(stamp: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stamp)))
    except ValueError:
        return stamp


def rollback(settings: NdeployRollbackSettings) -> int:
    """Switch current to the previous successful deploy (or to ``settings.to``)."""
    root = DeployRoot(settings.root, settings.namespace)
    try:
        before, after = root.rollback(settings.to)
    except LayoutError as exc:
        _err(str(exc))
        return Exit.FAILURE
    _out(f"current: {before if before is not None else '-'} -> {after}")
    _out(str(root.deploy_dir(after)))
    return Exit.OK
