"""Releases built from git on an agent's host: ndeploy deploy dirs, requested through Redis.

An instance whose run names a ``source`` (a git URL and a branch, tag or commit) runs from a
deploy dir that this host's ndeploy service built (docs/ndeploy.md): the agent's ``--ndeploy
NS`` names the namespace that service serves, on rcontrol's Redis (ndeploy's deploys are local
to their host: one ndeploy per host, each in a namespace of its own). The agent submits one
request per release (``ndeploy.requester``), waits for the response in the background, and keeps
the deploy dir by release; its instances wait meanwhile (state ``building``). A deploy dir that
ndeploy pruned since is requested again. A failed deploy is final for the release on this host:
its instances are reported ``exited`` with ndeploy's error, never restarted.

How an instance runs from a deploy dir: a service with the deploy's venv's Python when mpush is
installed in it (a release of mpush itself), else with the agent's Python and the venv's
packages first on its path (a release of handler code the service imports, such as ``mpush
handler --handler mypackage:handle``); a command with the venv's ``bin`` first on its ``PATH``
and ``RCONTROL_DEPLOY_DIR`` set.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mpush.connection import AnyRedis
from mpush.keys import NdeployKeys
from mpush.orchestration.ndeploy.requester import submit, wait_for_response
from mpush.orchestration.ndeploy.venv import VENV_DIR, venv_python
from mpush.orchestration.rcontrol.spec import Source

__all__ = ["Build", "Builds", "build_env", "build_python"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Build:
    """A release's deploy dir on this host: being built, ready (``path``), or failed."""

    state: Literal["building", "ready", "failed"]
    detail: str
    path: Path | None = None


class Builds:
    """The deploy dirs of the git releases this agent runs, requested from ndeploy."""

    def __init__(self, namespace: str | None, *, wait: float) -> None:
        self._keys = NdeployKeys(namespace) if namespace else None
        self._wait = wait
        self._builds: dict[str, Build] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def status(
        self, release: str, source: Source, redis: AnyRedis, changed: asyncio.Event
    ) -> Build:
        """Where ``release`` stands; a build is requested the first time it is asked for (and
        again if its deploy dir went away). ``changed`` is set when a build ends."""
        if self._keys is None:
            return Build("failed", "this agent has no --ndeploy namespace: it builds no git source")
        found = self._builds.get(release)
        if found is not None and found.state == "ready":
            assert found.path is not None
            if venv_python(found.path).exists():
                return found
            log.warning("release %s: %s is gone; building it again", release, found.path)
            found = None
        if found is None:
            found = self._builds[release] = Build("building", f"requesting {source.describe()}")
            self._tasks[release] = asyncio.create_task(
                self._build(release, source, redis, changed, self._keys)
            )
        return found

    async def _build(
        self,
        release: str,
        source: Source,
        redis: AnyRedis,
        changed: asyncio.Event,
        keys: NdeployKeys,
    ) -> None:
        try:
            request_id = await submit(redis, keys, source.request())
            what = source.describe()
            log.info("release %s: ndeploy request %d for %s", release, request_id, what)

            def step(name: str | None) -> None:
                detail = f"ndeploy request {request_id}: {name or 'queued'}"
                self._builds[release] = Build("building", detail)

            response = await wait_for_response(
                redis, keys, request_id, within=self._wait, on_step=step
            )
            if response is None:
                silence = f"ndeploy request {request_id}: no answer in {self._wait:g}s"
                built = Build("failed", silence)
            elif "deployDir" in response and "error" not in response:
                built = Build("ready", response["deployDir"], Path(response["deployDir"]))
            else:
                built = Build(
                    "failed",
                    f"ndeploy request {request_id} failed at {response.get('failedStep', '?')}: "
                    f"{response.get('error', '(no error text)')}",
                )
        except Exception as exc:  # whatever went wrong, the release is not built here
            built = Build("failed", f"ndeploy request for {source.describe()}: {exc!r}")
        self._builds[release] = built
        level = logging.INFO if built.state == "ready" else logging.ERROR
        log.log(level, "release %s %s: %s", release, built.state, built.detail)
        changed.set()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def build_python(deploy_dir: Path, default: str) -> tuple[str, bool]:
    """The Python a service of this deploy runs with, and whether it is the venv's own."""
    venv = deploy_dir / VENV_DIR
    if (venv / "bin" / "mpush").exists():
        return str(venv_python(deploy_dir)), True
    return default, False


def build_env(deploy_dir: Path, env: dict[str, str], *, own_python: bool, command: bool) -> None:
    """Put the deploy's venv in ``env``: first on PATH for a command, its packages first on the
    path of a service run with the agent's Python."""
    venv = deploy_dir / VENV_DIR
    env["RCONTROL_DEPLOY_DIR"] = str(deploy_dir)
    if command or own_python:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join(p for p in (str(venv / "bin"), env.get("PATH")) if p)
        return
    sites = sorted((venv / "lib").glob("python*/site-packages"))
    if sites:
        paths = [str(site) for site in sites]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
