"""ndeploy: on a request in Redis, git clone + install a Python package into a numbered deploy dir.

``mpush ndeploy serve`` takes requests one after another; ``mpush ndeploy pop WAIT`` takes one
within WAIT seconds and exits. Each instance claims a request id into its own in-flight list,
deploys it (``deployer``), and answers with ``<ns>:res:<id>`` plus a notification on
``<ns>:res:<id>:done``. Requests held by an instance that died are put back on the queue once its
registration has expired, and redone by another. See docs/ndeploy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping

from mpush.config import NdeployPopSettings, NdeployServeSettings
from mpush.connection import AnyRedis, RedisTarget, reply_text, translated
from mpush.errors import ConfigError, MpushError, TransientError
from mpush.exits import Exit
from mpush.keys import NdeployKeys
from mpush.orchestration.ndeploy.deployer import DeployPolicy, deploy
from mpush.orchestration.ndeploy.layout import DeployRoot
from mpush.orchestration.ndeploy.proc import StepError
from mpush.orchestration.ndeploy.queue import RequestQueue, check_cluster_namespace
from mpush.orchestration.ndeploy.request import DeployRequest, RequestError
from mpush.retry import Stopped, retrying
from mpush.runtime.runner import Context
from mpush.runtime.stage import run_stage

__all__ = ["NdeployService", "create"]

log = logging.getLogger(__name__)

_GIVE_BACK_TIMEOUT = 5.0


def create(settings: NdeployServeSettings) -> NdeployService:
    wait = settings.wait if isinstance(settings, NdeployPopSettings) else None
    return NdeployService(settings, wait=wait)


class NdeployService:
    """The runnable of ``ndeploy serve`` (``wait`` None) and ``ndeploy pop`` (``wait`` seconds)."""

    name = "ndeploy"

    def __init__(self, settings: NdeployServeSettings, *, wait: float | None = None) -> None:
        self.settings = settings
        self.wait = wait
        self.keys = NdeployKeys(settings.namespace)
        self.root = DeployRoot(settings.root, settings.namespace)
        self.policy = DeployPolicy(
            allow=tuple(prefix for prefix in settings.allow if prefix.strip()),
            python=settings.python or sys.executable,
            venv_pip=settings.venv_pip,
            pip_args=tuple(settings.pip_args),
            clone_timeout=settings.clone_timeout,
            install_timeout=settings.install_timeout,
            keep=settings.keep,
        )

    def registry_info(self) -> Mapping[str, str]:
        return {
            "in": self.keys.queue,
            "mode": "serve" if self.wait is None else "pop",
            "deployRoot": str(self.root.path),
        }

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        namespace = self.settings.namespace
        if target.cluster:
            check_cluster_namespace(namespace)
        for key, kind_wanted in ((self.keys.queue, "list"), (self.keys.holders, "set")):
            kind = await redis.type(key)
            kind = reply_text(kind)
            if kind not in ("none", kind_wanted):
                raise ConfigError(
                    "service_namespace", f"{key!r} holds a Redis {kind}, not a {kind_wanted}"
                )

    async def run(self, ctx: Context) -> None:
        if ctx.instance_id is None:
            raise MpushError("ndeploy needs a registered instance (a service namespace)")
        queue = RequestQueue(ctx.redis, self.settings.namespace, ctx.instance_id)
        loop = asyncio.get_running_loop()
        deadline = None if self.wait is None else loop.time() + self.wait
        next_sweep = 0.0

        async def step() -> int:
            nonlocal next_sweep
            if loop.time() >= next_sweep:
                await self._recover(ctx, queue)
                next_sweep = loop.time() + self.settings.recover_interval
            timeout = self.settings.pop_timeout
            if deadline is not None:
                timeout = min(timeout, deadline - loop.time())
            # An id already in our list (a step interrupted by a Redis outage) comes first.
            raw = await queue.held()
            if raw is None and timeout > 0:
                raw = await queue.claim(timeout)
            if raw is None:
                if deadline is not None and loop.time() >= deadline:
                    ctx.shutdown.request(
                        f"no request on {self.keys.queue} within {self.wait:g}s",
                        exit_code=Exit.NO_ANSWER,
                    )
                return 0
            ok = await self._handle(ctx, queue, raw)
            if self.wait is not None and ok is not None:
                outcome = "deployed" if ok else "deploy failed"
                ctx.shutdown.request(f"pop: {outcome}", exit_code=Exit.OK if ok else Exit.FAILURE)
            return 1

        async def idle() -> None:
            return None

        try:
            await run_stage(step, idle, batch=1, shutdown=ctx.shutdown, outage=ctx.outage)
        finally:
            await self._give_back(queue)

    async def _recover(self, ctx: Context, queue: RequestQueue) -> None:
        recovered = await queue.recover()
        for owner, count in recovered.items():
            log.warning(
                "requeued %d request(s) held by instance %s, whose registration is gone",
                count,
                owner,
            )
            ctx.metrics.incr("deploy", "recovered", count)

    async def _give_back(self, queue: RequestQueue) -> None:
        try:
            async with asyncio.timeout(_GIVE_BACK_TIMEOUT):
                count = await queue.give_back()
        except Exception as exc:  # they stay in our list; recovered once our registration expires
            log.warning("could not give back in-flight requests: %r", exc)
            return
        if count:
            log.info("gave back %d unfinished request(s) to %s", count, self.keys.queue)

    async def _handle(self, ctx: Context, queue: RequestQueue, raw_id: str) -> bool | None:
        """Deploy one claimed request and answer it: True when deployed, None if not a request."""
        if not raw_id.isdecimal():
            await queue.set_aside(raw_id)
            ctx.metrics.incr("deploy", "malformed")
            log.warning("set aside %r from %s: not a request id", raw_id[:80], self.keys.queue)
            return None
        request_id = int(raw_id)
        fields, attempts = await queue.load(request_id)
        began = time.monotonic()
        try:
            if not fields:
                raise StepError("request", f"{self.keys.request(request_id)} does not exist")
            if attempts > self.settings.max_attempts:
                raise StepError(
                    "claim",
                    f"given up after {attempts - 1} attempts (each holder stopped mid-deploy)",
                )
            try:
                request = DeployRequest.from_hash(request_id, fields)
            except RequestError as exc:
                raise StepError("request", str(exc)) from None
            log.info(
                "deploy %d: %s %s (attempt %d)", request_id, request.git, request.ref, attempts
            )
            record = await deploy(
                request,
                self.root,
                self.policy,
                service=str(ctx.instance_id),
                clock=self._clock(ctx, queue),
                progress=self._progress(queue, request_id),
            )
        except StepError as exc:
            log.warning("deploy %d failed at %s: %s", request_id, exc.step, exc.message)
            ctx.metrics.incr("deploy", "failed")
            response = {
                "service": str(ctx.instance_id),
                "error": exc.message,
                "failedStep": exc.step,
            }
            await self._finish(ctx, queue, request_id, "error", response)
            return False
        except asyncio.CancelledError:
            await self._quietly(queue.unclaim_attempt(request_id))
            raise
        seconds = time.monotonic() - began
        log.info(
            "deploy %d: %s at %s in %.1fs",
            request_id,
            record.deploy_dir,
            record.actual_commit[:12],
            seconds,
        )
        ctx.metrics.incr("deploy", "ok")
        ctx.metrics.observe(
            "deploy", seconds, timeout=self.settings.clone_timeout + self.settings.install_timeout
        )
        response = {
            "service": str(ctx.instance_id),
            "deployDir": record.deploy_dir,
            "cloned": record.cloned,
            "installed": record.installed,
            "actualCommit": record.actual_commit,
        }
        await self._finish(ctx, queue, request_id, "ok", response)
        return True

    async def _finish(
        self,
        ctx: Context,
        queue: RequestQueue,
        request_id: int,
        outcome: str,
        response: Mapping[str, str],
    ) -> None:
        """Answer, retrying through Redis outages; if we stop first, the id stays claimed and is
        redone by another instance once our registration expires."""
        try:
            stamp = await retrying(
                lambda: queue.finish(
                    request_id, outcome, response, notify_expire=self.settings.notify_expire
                ),
                outage=ctx.outage,
                shutdown=ctx.shutdown,
            )
        except Stopped:
            return
        if stamp is None:
            log.warning(
                "deploy %d: our claim was taken over (registration lapsed); not answering it",
                request_id,
            )

    def _clock(self, ctx: Context, queue: RequestQueue) -> Callable[[], Awaitable[str]]:
        async def clock() -> str:
            try:
                with translated():
                    return await queue.now()
            except TransientError as exc:
                ctx.outage.failed(exc)
                return f"{time.time():.6f}"  # Redis unreachable at this instant: local clock

        return clock

    def _progress(self, queue: RequestQueue, request_id: int) -> Callable[[str], Awaitable[None]]:
        async def progress(step: str) -> None:
            log.info("deploy %d: %s", request_id, step)
            await self._quietly(queue.set_step(request_id, step))

        return progress

    @staticmethod
    async def _quietly(call: Awaitable[object]) -> None:
        """Best-effort bookkeeping: a Redis outage here must not fail the deploy."""
        with contextlib.suppress(TransientError), translated():
            await call
