"""``mpush rcontrol controller``: reconciles declared with running state; one active at a time.

Run as many as wanted: they compete for the lease ``NS:rcontrol:lease`` (``runtime/lease.py``);
the holder renews it every ``lease_ttl``/3 seconds and the others retry within ``lease_ttl``/3, so
a standby takes over within ``lease_ttl`` of the active one's death (at once when it stops
cleanly: it releases the lease). The holder's fencing token and the epoch guard every change it
makes (``fence.py``).

While it leads, the controller reconciles on every push to ``NS:rcontrol:wake`` (a command
changed a declaration, an agent reported a new state) and at least every ``tick`` seconds: it
reads the whole state (the Redis time, two pipelined round trips), plans (``plan.py``) and
applies each decision as one fenced step, logged on the event stream. After any failure it reads
again and plans afresh rather than retrying a step. A host is judged dead only once the
controller has watched Redis without a break for ``host_grace`` seconds (after taking the lease,
or after an outage, heartbeats need time to come back).

Before the rules, each reconcile applies the deployments' policies (``steering.py``): the
replicas the autoscaler decided, and each rollout's progress or rollback. While it leads, the
controller also reads what drives the autoscaled deployments every ``scale_interval`` seconds,
and reconciles at once when one should scale.

If Redis comes back without its data (a new epoch), the controller stands down, takes the lease
again, and declares again the deployments it last read (``restore``), above the last instance
number it saw, so no instance id is reused; the instances themselves stopped when their
registrations vanished, and are placed afresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from mpush.config import RcontrolControllerSettings
from mpush.connection import AnyRedis, RedisTarget, reply_text
from mpush.errors import FencedError, TransientError
from mpush.keys import RcontrolKeys
from mpush.orchestration.rcontrol.events import Event, record
from mpush.orchestration.rcontrol.fence import Fence, new_epoch
from mpush.orchestration.rcontrol.plan import Activate, Note, Place, Retire, plan
from mpush.orchestration.rcontrol.state import Assignment, Declaration, Snapshot
from mpush.orchestration.rcontrol.steering import Steering
from mpush.orchestration.rcontrol.store import check_slots, read_snapshot
from mpush.retry import Backoff, Step, Stopped, keep_trying, retrying
from mpush.runtime.lease import Lease
from mpush.runtime.runner import Context

__all__ = ["Controller", "create"]

log = logging.getLogger(__name__)

_REPUSH_AFTER = 1.0  # seconds before an activation not yet taken is pushed again
_RELEASE_TIMEOUT = 2.0


def create(settings: RcontrolControllerSettings) -> Controller:
    return Controller(settings)


class Controller:
    """One controller replica (a ``runtime.runner.Service``)."""

    name = "rcontrol-controller"
    outlive_data_loss = True  # a Redis that lost its data must not take the controllers down

    def __init__(self, settings: RcontrolControllerSettings) -> None:
        self.settings = settings
        self.keys = RcontrolKeys(settings.namespace)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.epoch: str | None = None  # the epoch it last led in
        self.highest = 0  # the highest token it ever held
        self.seq = 0  # the highest instance number it ever saw
        self.declared: dict[str, Declaration] = {}  # as last read, for restore
        self._noted: set[str] = set()
        self._pushed: dict[str, float] = {}  # instance id → when its activation was last pushed
        self._view_since: float | None = None  # loop time since which reads never failed
        self._capacity = settings.events_capacity
        self.steering = Steering(self.keys)

    def registry_info(self) -> Mapping[str, str]:
        return {"rcontrol": "controller"}

    async def prepare(self, redis: AnyRedis, target: RedisTarget) -> None:
        if target.cluster:
            check_slots(self.keys)

    async def run(self, ctx: Context) -> None:
        lease = Lease(
            ctx.redis,
            self.keys.lease,
            self.keys.state,
            owner=self.owner,
            ttl=self.settings.lease_ttl,
        )
        retry_every = self.settings.lease_ttl / 3
        standing_by = False
        while not ctx.shutdown.requested:
            try:
                state = await retrying(
                    lambda: lease.acquire(floor=self.highest + 1 if self.highest else 0),
                    outage=ctx.outage,
                    shutdown=ctx.shutdown,
                )
            except Stopped:
                return
            if not state.acquired:
                if not standing_by:
                    log.info("standing by: the lease is held by %s", state.holder)
                    standing_by = True
                await ctx.shutdown.sleep(min(max(state.wait, 0.05), retry_every))
                continue
            standing_by = False
            self.highest = max(self.highest, state.token)
            try:
                await self._lead(ctx, lease, state.token)
            except FencedError as exc:
                log.warning("standing down: %s", exc)
            except Stopped:
                return
            finally:
                if ctx.shutdown.requested:
                    await self._release(lease)

    async def _release(self, lease: Lease) -> None:
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await lease.release()
        except (TransientError, TimeoutError, OSError) as exc:
            log.warning("could not release the lease (it expires by itself): %r", exc)

    async def _epoch(self, redis: AnyRedis) -> str:
        await redis.hsetnx(self.keys.state, "epoch", new_epoch())
        return reply_text(await redis.hget(self.keys.state, "epoch"))

    async def _lead(self, ctx: Context, lease: Lease, token: int) -> None:
        redis = ctx.redis
        epoch = await retrying(lambda: self._epoch(redis), outage=ctx.outage, shutdown=ctx.shutdown)
        fence = Fence(
            redis,
            self.keys,
            epoch=epoch,
            token=token,
            by=f"controller {self.owner} (token {token})",
            capacity=self.settings.events_capacity,
        )
        lost = asyncio.Event()
        changed = asyncio.Event()
        holder = asyncio.create_task(lease.hold(lost, ctx.outage))
        holder.add_done_callback(lambda _: changed.set())  # a lost lease ends the wait at once
        waker = asyncio.create_task(self._wake_loop(ctx, changed, lost))
        sampler = asyncio.create_task(self._sample_loop(ctx, changed, lost))
        loop = asyncio.get_running_loop()
        try:
            await retrying(
                lambda: self._begin(redis, fence, epoch),
                outage=ctx.outage,
                shutdown=ctx.shutdown,
            )
            self._view_since = loop.time()
            log.info("leading with token %d (epoch %s)", token, epoch)

            def blind(_: TransientError) -> None:
                self._view_since = None  # heartbeats may have lapsed meanwhile

            async def turn() -> Step | None:
                if lost.is_set():
                    return Step.DONE
                await self._reconcile(redis, fence)
                changed.clear()
                await ctx.shutdown.sleep(self.settings.tick, wake=changed)
                return None

            await keep_trying(
                turn,
                outage=ctx.outage,
                shutdown=ctx.shutdown,
                backoff=Backoff(cap=self.settings.tick),
                on_transient=blind,
            )
        finally:
            for task in (holder, waker, sampler):
                task.cancel()
            await asyncio.gather(holder, waker, sampler, return_exceptions=True)

    async def _begin(self, redis: AnyRedis, fence: Fence, epoch: str) -> None:
        """Declare again what a Redis that lost its data forgot (a new epoch); log the lead."""
        if self.epoch is not None and epoch != self.epoch and self.declared:
            restored = await fence.restore(list(self.declared.values()), self.seq)
            log.warning("Redis lost its data: declared %d deployments again", restored)
        self.epoch = epoch
        self._noted.clear()
        why = f"token {fence.token}, epoch {epoch}"
        await record(redis, self.keys, Event("lead", why=why, by=fence.by), self._capacity)

    async def _wake_loop(self, ctx: Context, changed: asyncio.Event, lost: asyncio.Event) -> None:
        wait: Any = self.settings.pop_timeout  # the client's socket timeout outlasts it

        async def pop() -> Step | None:
            if lost.is_set():
                return Step.DONE
            if await ctx.redis.blpop([self.keys.wake], wait) is not None:
                changed.set()
            return None

        await keep_trying(pop, outage=ctx.outage, shutdown=ctx.shutdown)

    async def _sample_loop(self, ctx: Context, changed: asyncio.Event, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()

        async def sample() -> Step | None:
            if lost.is_set():
                return Step.DONE
            if await self.steering.sample(ctx.redis, loop.time()):
                changed.set()
            return None

        await keep_trying(
            sample, outage=ctx.outage, shutdown=ctx.shutdown, every=self.settings.scale_interval
        )

    async def _read(self, redis: AnyRedis, fence: Fence) -> Snapshot:
        snapshot = await read_snapshot(redis, self.keys)
        if snapshot.epoch != fence.epoch:
            raise FencedError(f"the epoch changed ({snapshot.epoch}): Redis lost its data")
        return snapshot

    async def _reconcile(self, redis: AnyRedis, fence: Fence) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        snapshot = await self._read(redis, fence)
        if self._view_since is None:
            self._view_since = loop.time()
        steered = await self.steering.steer(redis, fence, snapshot, loop.time())
        if steered.reread:  # a rollback changed what runs: plan from what it wrote
            began, snapshot = loop.time(), await self._read(redis, fence)
        self._remember(snapshot)
        judge = loop.time() - self._view_since >= self.settings.host_grace
        notes: set[str] = set()
        for decision in [*steered.notes, *plan(snapshot, judge_dead=judge)]:
            if isinstance(decision, Place):
                assignment = Assignment(
                    deployment=decision.deployment,
                    host=decision.host,
                    role=decision.role,
                    release=decision.release,
                    run=decision.run,
                    token=fence.token,
                    placed=snapshot.now + (loop.time() - began),
                )
                instance_id = await fence.place(assignment, why=decision.why)
                where = f"{instance_id} ({decision.role}) on {decision.host}"
                log.info("placed %s: %s", where, decision.why)
            elif isinstance(decision, Activate):
                await self._activate(fence, decision, loop.time())
            elif isinstance(decision, Retire):
                if await fence.retire(decision.placed, kind=decision.kind, why=decision.why):
                    log.info("%s %s: %s", decision.kind, decision.placed.id, decision.why)
            elif isinstance(decision, Note):
                notes.add(decision.key)
                if decision.key not in self._noted:
                    await self._note(redis, decision, fence.by)
        self._noted = notes

    async def _activate(self, fence: Fence, decision: Activate, now: float) -> None:
        instance_id = decision.placed.id
        if decision.repeat and now - self._pushed.get(instance_id, 0.0) < _REPUSH_AFTER:
            return
        self._pushed[instance_id] = now
        if await fence.activate(decision.placed, why=decision.why) and not decision.repeat:
            log.info("activated %s: %s", instance_id, decision.why)

    async def _note(self, redis: AnyRedis, note: Note, by: str) -> None:
        event = Event(note.kind, note.deployment, note.instance, note.host, note.why, by)
        await record(redis, self.keys, event, self._capacity)
        log.warning("%s: %s", note.kind, note.why)

    def _remember(self, snapshot: Snapshot) -> None:
        self.declared = dict(snapshot.declarations)
        seqs = [placed.seq for placed in snapshot.assignments.values()]
        self.seq = max([self.seq, snapshot.seq, *seqs])
        live = set(snapshot.assignments)
        self._pushed = {k: v for k, v in self._pushed.items() if k in live}
