"""``mpush rcontrol agent``: runs the instances rcontrol assigns to one host, and reports them.

Every ``heartbeat`` seconds — at once when its wake list ``NS:rcontrol:host:<host>:wake`` gets a
push (the controller pushes after every change of this host's assignments) or one of its
instances exits — the agent takes one turn:

1. heartbeat (``lua/rcontrol_heartbeat.lua``): its host hash (capacity, labels, load average,
   free memory, …) alive for ``host_ttl``, and its last-seen time; read the assignments and the
   label index in the same round trip;
2. start each instance assigned to it that is not running, restart (after its backoff) one that
   exited, and stop one no longer assigned: a registered service is stopping already (the
   controller deleted its registration), anything else gets SIGTERM; SIGTERM, then SIGKILL, when
   it outlives ``stop_timeout``;
3. observe: a running service is ``ready`` (or ``standby``) once a registration carrying its label
   and its pid exists, ``starting`` before; report every instance in
   ``NS:rcontrol:instance:<id>`` and, when a state changed, wake the controller.

On SIGTERM (or the DEL of its own registration) it stops its instances, removes its heartbeat (so
the controller reschedules them at once) and exits. Killed with ``kill -9``, its instances get
SIGTERM from the kernel (``children.die_with_parent``) and its heartbeat expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript

from mpush.config import RcontrolAgentSettings
from mpush.connection import AnyRedis, RedisTarget, load_lua, reply_text
from mpush.keys import RcontrolKeys, ServiceKeys
from mpush.orchestration.children import RestartPolicy, die_with_parent
from mpush.orchestration.rcontrol.builds import Builds
from mpush.orchestration.rcontrol.hostinfo import host_figures, overload
from mpush.orchestration.rcontrol.instances import Instance, Launch
from mpush.orchestration.rcontrol.state import Assignment, Placed
from mpush.orchestration.rcontrol.store import check_slots
from mpush.retry import Step, keep_trying
from mpush.runtime.runner import Context

__all__ = ["Agent", "create"]

log = logging.getLogger(__name__)

_GOODBYE_TIMEOUT = 3.0
_ENV_PREFIX = "MPUSH_"


def create(settings: RcontrolAgentSettings) -> Agent:
    return Agent(settings, environ=os.environ)


def _work_dir(settings: RcontrolAgentSettings) -> Path:
    if settings.work_dir is not None:
        return settings.work_dir.expanduser()
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in settings.namespace)
    return Path(tempfile.gettempdir()) / f"mpush-rcontrol-{safe}-{settings.host}"


class Agent:
    """The agent of one host (a ``runtime.runner.Service``)."""

    name = "rcontrol-agent"
    outlive_data_loss = True  # a Redis that lost its data must not take the agents down

    def __init__(self, settings: RcontrolAgentSettings, *, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.keys = RcontrolKeys(settings.namespace)
        self.registry = ServiceKeys(settings.namespace)
        self.host = settings.host
        self.instances: dict[str, Instance] = {}
        self._environ = {k: v for k, v in environ.items() if not k.startswith(_ENV_PREFIX)}
        self._reported: dict[str, tuple[str, int | None, str]] = {}
        self._started = time.time()
        self.builds = Builds(settings.ndeploy, wait=settings.ndeploy_wait)

    def registry_info(self) -> Mapping[str, str]:
        return {"rcontrol_host": self.host, "capacity": str(self.settings.capacity)}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            check_slots(self.keys)

    def _launch(self) -> Launch:
        settings = self.settings
        policy = RestartPolicy(
            first_delay=settings.restart_delay,
            max_delay=settings.restart_max_delay,
            stable_after=settings.stable_after,
            give_up_after=settings.failing_after - 1,
            stop_timeout=settings.stop_timeout,
        )
        return Launch(
            host=self.host,
            namespace=settings.namespace,
            redis=settings.redis,
            cluster=settings.cluster,
            python=settings.python or sys.executable,
            work_dir=_work_dir(settings),
            env=self._environ,
            policy=policy,
            preexec=die_with_parent(),
        )

    async def run(self, ctx: Context) -> None:
        launch = self._launch()
        launch.work_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "agent of host %s: capacity %d, labels %s, instances in %s",
            self.host,
            self.settings.capacity,
            self.settings.label_map or "none",
            launch.work_dir,
        )
        heartbeat = ctx.redis.register_script(load_lua("rcontrol_heartbeat"))
        changed = asyncio.Event()
        changed.set()  # the first turn at once
        waker = asyncio.create_task(self._wake_loop(ctx, changed))

        async def turn() -> Step | None:
            await ctx.shutdown.sleep(self._next_wait(), wake=changed)
            changed.clear()
            if ctx.shutdown.requested:
                return Step.DONE
            await self._tick(ctx.redis, heartbeat, launch, changed)
            return None

        try:
            await keep_trying(turn, outage=ctx.outage, shutdown=ctx.shutdown)
        finally:
            waker.cancel()
            await asyncio.gather(waker, return_exceptions=True)
            await self.builds.close()
            await self._stop_all()
            await self._goodbye(ctx.redis)

    def _next_wait(self) -> float:
        wait = self.settings.heartbeat
        now = time.monotonic()
        for instance in self.instances.values():
            if instance.restart_at is not None:
                wait = min(wait, max(0.0, instance.restart_at - now))
            if instance.stopping and instance.alive:
                wait = min(wait, 0.5)
        return wait

    async def _wake_loop(self, ctx: Context, changed: asyncio.Event) -> None:
        key = self.keys.host_wake(self.host)
        wait: Any = self.settings.pop_timeout  # the client's socket timeout outlasts it

        async def pop() -> None:
            if await ctx.redis.blpop([key], wait) is not None:
                changed.set()

        await keep_trying(pop, outage=ctx.outage, shutdown=ctx.shutdown)

    async def _tick(
        self, redis: AnyRedis, heartbeat: AsyncScript, launch: Launch, changed: asyncio.Event
    ) -> None:
        settings = self.settings
        figures = host_figures()
        fields: dict[str, str] = {
            "capacity": str(settings.capacity),
            "labels": ",".join(f"{k}={v}" for k, v in settings.label_map.items()),
            "load1": "" if figures.load1 is None else f"{figures.load1:.2f}",
            "mem_free": "" if figures.mem_free is None else str(figures.mem_free),
            "mem_total": "" if figures.mem_total is None else str(figures.mem_total),
            "cpus": "" if figures.cpus is None else str(figures.cpus),
            "pid": str(os.getpid()),
            "started": f"{self._started:.3f}",
            "ttl": f"{settings.host_ttl:g}",
            "running": str(sum(1 for i in self.instances.values() if i.alive)),
            "overloaded": overload(
                figures, max_load=settings.max_load, max_memory=settings.max_memory
            ),
        }
        args: list[str | int] = [self.host, round(settings.host_ttl * 1000)]
        for name, value in fields.items():
            args += [name, value]
        # The script on its own: a Cluster client refuses scripts inside a pipeline.
        await heartbeat(keys=[self.keys.host(self.host), self.keys.hosts], args=args)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.assignments)
            pipe.hgetall(self.registry.labels)
            assigned, labels_raw = await pipe.execute()
        mine: dict[str, Assignment] = {}
        for raw_id, raw in (assigned or {}).items():
            placed = Placed.decode(reply_text(raw_id), reply_text(raw))
            if placed.assignment is not None and placed.assignment.host == self.host:
                mine[placed.id] = placed.assignment
        labels = {reply_text(k): reply_text(v) for k, v in (labels_raw or {}).items()}
        await self._converge(redis, mine, launch, changed)
        await self._observe(redis, labels)
        await self._report(redis)

    async def _converge(
        self,
        redis: AnyRedis,
        mine: Mapping[str, Assignment],
        launch: Launch,
        changed: asyncio.Event,
    ) -> None:
        now = time.monotonic()
        for instance_id, instance in list(self.instances.items()):
            wanted = mine.get(instance_id)
            if wanted is None or abs(wanted.placed - instance.assignment.placed) > 1e-3:
                if not instance.stopping:
                    log.info("%s is no longer assigned here: stopping it", instance_id)
                instance.unassign(now)
            else:
                instance.assignment = wanted  # its role may have changed (activated)
            if instance.stopping:
                instance.nudge(now, self.settings.stop_timeout)
                if not instance.alive:
                    await instance.close()
                    del self.instances[instance_id]
        for instance_id, assignment in mine.items():
            known = self.instances.get(instance_id)
            if known is None:
                fresh = self.instances[instance_id] = Instance(instance_id, assignment, launch)
                await self._start(redis, fresh, changed, now)
            elif (
                not known.alive
                and not known.stopping
                and known.restart_at is not None
                and known.restart_at <= now
            ):
                await self._start(redis, known, changed, now)

    async def _start(
        self, redis: AnyRedis, instance: Instance, changed: asyncio.Event, now: float
    ) -> None:
        """Start an instance, from its release's deploy dir when it runs a git source (once
        ndeploy built it)."""
        source = instance.assignment.run.source
        if source is None:
            await instance.start(changed)
            return
        build = self.builds.status(instance.assignment.release, source, redis, changed)
        if build.state == "building":
            instance.building(build.detail, now)
        elif build.state == "failed":
            instance.unbuildable(build.detail)
        else:
            await instance.start(changed, build.path)

    async def _observe(self, redis: AnyRedis, labels: Mapping[str, str]) -> None:
        now = time.monotonic()
        running = [
            (instance, labels[instance.id])
            for instance in self.instances.values()
            if instance.alive and instance.id in labels
        ]
        registrations: list[object] = []
        if running:
            async with redis.pipeline(transaction=False) as pipe:
                for _, service_id in running:
                    pipe.hmget(self.registry.instance(service_id), ["pid", "standby"])
                registrations = await pipe.execute()
        found: dict[str, tuple[str, str]] = {}
        for (instance, service_id), reply in zip(running, registrations, strict=True):
            pid, standby = (reply_text(v) if v is not None else "" for v in reply)  # type: ignore[attr-defined]
            if pid == str(instance.child.pid):
                found[instance.id] = (service_id, standby)
        for instance in self.instances.values():
            instance.observe(found.get(instance.id), now)

    async def _report(self, redis: AnyRedis) -> None:
        ttl = max(3, round(self.settings.host_ttl * 2))
        gone = [iid for iid in self._reported if iid not in self.instances]
        moved = False
        async with redis.pipeline(transaction=False) as pipe:
            for instance in self.instances.values():
                report = instance.report(self.host)
                key = self.keys.instance(instance.id)
                pipe.hset(key, mapping=report.fields())  # type: ignore[arg-type]
                pipe.expire(key, ttl)
                now = (report.state.value, report.pid, report.service_id)
                moved = moved or self._reported.get(instance.id) != now
                self._reported[instance.id] = now
            for instance_id in gone:
                pipe.delete(self.keys.instance(instance_id))
                del self._reported[instance_id]
            if moved or gone:
                pipe.lpush(self.keys.wake, "1")
                pipe.ltrim(self.keys.wake, 0, 0)
                pipe.pexpire(self.keys.wake, 60_000)
            await pipe.execute()

    async def _stop_all(self) -> None:
        """Stop every instance at once: SIGTERM, then SIGKILL after stop_timeout."""
        alive = [i for i in self.instances.values() if i.alive]
        if alive:
            log.info("stopping %d instances", len(alive))
        for instance in alive:
            instance.unassign(time.monotonic())
            instance.child.send(signal.SIGTERM)
        await asyncio.gather(
            *(i.child.reap(self.settings.stop_timeout) for i in alive), return_exceptions=True
        )
        for instance in self.instances.values():
            instance.child.kill()  # only one that outlived everything: never leave one behind
            await instance.close()

    async def _goodbye(self, redis: AnyRedis) -> None:
        """Remove the heartbeat and the reports (best effort): the controller reschedules now."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_GOODBYE_TIMEOUT), redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.host(self.host))
                for instance_id in self._reported:
                    pipe.delete(self.keys.instance(instance_id))
                pipe.lpush(self.keys.wake, "1")
                pipe.ltrim(self.keys.wake, 0, 0)
                pipe.pexpire(self.keys.wake, 60_000)
                await pipe.execute()
            log.info("host %s signed off", self.host)
