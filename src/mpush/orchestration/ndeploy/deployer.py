"""One deploy, start to finish: allowlist, clone, check out, venv, install, record, switch, prune.

A deploy either completes — its record written, ``current`` switched to it — or leaves nothing
behind: on any failure, timeout or cancellation its half-made dir is removed and ``current`` is
untouched. The deploy dir is locked while it is worked on.

A request is redone when the instance that held it died. If that attempt had completed here (its
record written), the redo answers from the record instead of deploying again; if it had not, the
redo first kills the attempt's stragglers (pip's children outlive a kill -9) and removes its dir.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mpush.config.git import url_allowed
from mpush.orchestration.ndeploy import git
from mpush.orchestration.ndeploy.layout import DeployRecord, DeployRoot
from mpush.orchestration.ndeploy.proc import StepError, kill_stragglers
from mpush.orchestration.ndeploy.request import DeployRequest
from mpush.orchestration.ndeploy.venv import create_venv, install, plan_install

__all__ = ["Clock", "DeployPolicy", "Progress", "deploy"]

log = logging.getLogger(__name__)

Clock = Callable[[], Awaitable[str]]
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class DeployPolicy:
    allow: tuple[str, ...]
    python: str
    venv_pip: bool = True
    pip_args: tuple[str, ...] = ()
    clone_timeout: float = 300.0
    install_timeout: float = 600.0
    keep: int = 5


async def _no_progress(step: str) -> None:
    return None


async def _local_clock() -> str:
    return f"{time.time():.6f}"


async def deploy(
    request: DeployRequest,
    root: DeployRoot,
    policy: DeployPolicy,
    *,
    service: str,
    clock: Clock = _local_clock,
    progress: Progress = _no_progress,
) -> DeployRecord:
    """Deploy ``request`` into ``root``; StepError names the step that failed."""
    if not url_allowed(request.git, policy.allow):
        raise StepError("allow", f"{request.git} does not start with an allowed prefix")
    root.ensure()
    try:
        fd = await root.lock_deploy(request.id, within=policy.clone_timeout)
    except TimeoutError:
        raise StepError("lock", f"{root.deploy_dir(request.id)} stayed locked") from None
    except OSError as exc:
        raise StepError("lock", f"cannot lock in {root.path}: {exc}") from exc
    try:
        earlier = root.record(request.id)
        if earlier is not None and earlier.git == request.git:
            _adopt(root, earlier)
            return earlier
        record = await _build(
            request, root, lambda: _steps(request, root, policy, service, clock, progress)
        )
    finally:
        root.unlock(fd)
    try:
        removed = root.prune(policy.keep)
    except OSError as exc:
        log.warning("deploy %d: pruning %s failed: %s", request.id, root.path, exc)
    else:
        if removed:
            log.info("deploy %d: pruned %s", request.id, ", ".join(map(str, removed)))
    return record


def _adopt(root: DeployRoot, earlier: DeployRecord) -> None:
    """A redo of a deploy an earlier attempt completed here: keep it, and switch to it."""
    log.info("deploy %d: completed by an earlier attempt; answering from its record", earlier.id)
    current = root.current_id()
    if current is None or current < earlier.id:
        try:
            root.switch(earlier.id)
        except OSError as exc:
            raise StepError("switch", f"{exc.strerror or exc}: {exc.filename or ''}") from exc


async def _build(
    request: DeployRequest, root: DeployRoot, steps: Callable[[], Awaitable[DeployRecord]]
) -> DeployRecord:
    """Deploy into a fresh dir (``steps``) and switch to it; on any failure remove the dir and
    re-raise."""
    step = "prepare"
    try:
        _clear_leftovers(root, request.id)
        record = await steps()
        step = "switch"
        root.write_record(record)
        root.switch(request.id)
    except BaseException as exc:
        try:
            root.discard(request.id)
        except OSError as cleanup:
            log.warning("deploy %d: removing the failed deploy failed: %s", request.id, cleanup)
        if isinstance(exc, OSError):
            raise StepError(step, f"{exc.strerror or exc}: {exc.filename or ''}") from exc
        raise
    return record


def _clear_leftovers(root: DeployRoot, deploy_id: int) -> None:
    """Remove what an attempt that died left behind, stopping its stragglers first."""
    directory = root.deploy_dir(deploy_id)
    if not directory.exists():
        return
    killed = kill_stragglers(directory)
    if killed:
        log.warning(
            "deploy %d: killed %d process(es) left by an earlier attempt", deploy_id, killed
        )
    root.discard(deploy_id)


async def _steps(
    request: DeployRequest,
    root: DeployRoot,
    policy: DeployPolicy,
    service: str,
    clock: Clock,
    progress: Progress,
) -> DeployRecord:
    dest: Path = root.deploy_dir(request.id)
    await progress("cloning")
    await git.clone(
        request.git, dest, ref=request.tag or request.branch, limit=policy.clone_timeout
    )
    if request.commit:
        await progress("checking out")
        await git.checkout(dest, request.commit, branch=request.branch, limit=policy.clone_timeout)
    actual = await git.head(dest, limit=policy.clone_timeout)
    if request.commit and not actual.startswith(request.commit):
        raise StepError("checkout", f"{request.commit} resolved to {actual}")
    branch = request.branch
    if branch is None and request.tag is None and request.commit is None:
        branch = await git.current_branch(dest, limit=policy.clone_timeout)
    cloned = await clock()
    plan = plan_install(dest)
    await progress("creating venv")
    await create_venv(policy.python, dest, with_pip=policy.venv_pip, limit=policy.install_timeout)
    await progress("installing")
    await install(
        dest,
        plan,
        pip_python=None if policy.venv_pip else policy.python,
        pip_args=policy.pip_args,
        limit=policy.install_timeout,
    )
    installed = await clock()
    return DeployRecord(
        id=request.id,
        git=request.git,
        branch=branch,
        commit=request.commit,
        tag=request.tag,
        actual_commit=actual,
        deploy_dir=str(dest),
        cloned=cloned,
        installed=installed,
        service=service,
    )
