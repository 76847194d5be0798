"""The active controller's policies over the declarations: autoscaling and rollouts.

``sample`` runs every ``scale_interval`` seconds while the controller leads: one pipelined read
of every autoscaled deployment's queue length and response metric (``NS:metrics:<name>``), fed
to the ``Autoscaler``; it tells the controller to reconcile at once when a deployment's replicas
should change, so a step of load is met within an interval (and a standby instance serves
milliseconds after).

``steer`` runs at the start of every reconcile, before the rules: it sets the replicas the
autoscaler decided and moves every rollout on (``rollouts.judge``: to verifying, complete or
rolled-back, or back to the previous release when the new one is worse), each as one fenced
compare-and-set step on the declaration (``lua/rcontrol_declare.lua``) logged as an event with
the figures behind it. A controller killed between two steps leaves a declaration that is
whole: the next one reads it and carries on (every rule is level-triggered).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from mpush.connection import AnyRedis, reply_text
from mpush.keys import RcontrolKeys, ServiceKeys
from mpush.orchestration.rcontrol.autoscale import Autoscaler, Reading
from mpush.orchestration.rcontrol.fence import Fence
from mpush.orchestration.rcontrol.plan import Note
from mpush.orchestration.rcontrol.rollouts import (
    Advance,
    ReleaseFigures,
    RollBack,
    judge,
    rollback_fields,
)
from mpush.orchestration.rcontrol.state import Declaration, Snapshot, number

__all__ = ["Steered", "Steering"]

log = logging.getLogger(__name__)


@dataclass
class Steered:
    """What ``steer`` did: notes to log once, and whether the state must be read again (a
    rollback changed what runs)."""

    notes: list[Note]
    reread: bool = False


class Steering:
    """Autoscaling and rollouts for one controller."""

    def __init__(self, keys: RcontrolKeys) -> None:
        self.keys = keys
        self.registry = ServiceKeys(keys.namespace)
        self.autoscaler = Autoscaler()
        self.declared: dict[str, Declaration] = {}  # as the last reconcile read them

    async def sample(self, redis: AnyRedis, now: float) -> bool:
        """Read what drives the autoscaled deployments; True when one should change now."""
        scaled = [d for d in self.declared.values() if d.deployment.autoscale is not None]
        self.autoscaler.forget({d.name for d in scaled})
        if not scaled:
            return False
        async with redis.pipeline(transaction=False) as pipe:
            for declaration in scaled:
                config = declaration.deployment.autoscale
                assert config is not None
                if config.queue is not None:
                    pipe.llen(config.queue)
                metric = declaration.deployment.response_metric
                if metric is not None:
                    pipe.hgetall(self.registry.metrics(metric))
            replies = iter(await pipe.execute())
        wanted = False
        for declaration in scaled:
            config = declaration.deployment.autoscale
            assert config is not None
            queue = int(next(replies)) if config.queue is not None else None
            metric = declaration.deployment.response_metric
            latency = _figures(next(replies)) if metric is not None else None
            reading = Reading(now, queue, latency)
            self.autoscaler.observe(
                declaration.name, config, declaration.replicas, reading, metric=metric or ""
            )
            if self.autoscaler.decide(declaration.name, declaration.replicas, now) is not None:
                wanted = True
        return wanted

    async def steer(self, redis: AnyRedis, fence: Fence, snapshot: Snapshot, now: float) -> Steered:
        """Apply the autoscaler's decisions and the rollouts' verdicts (``now``: monotonic)."""
        self.declared = dict(snapshot.declarations)
        steered = Steered([])
        for name, declaration in list(snapshot.declarations.items()):
            if declaration.deployment.autoscale is None:
                continue
            scaling = self.autoscaler.decide(name, declaration.replicas, now)
            if scaling is None:
                continue
            fields = {"replicas": str(scaling.replicas)}
            generation = await fence.declare(declaration, fields, kind="autoscale", why=scaling.why)
            if generation is not None:
                log.info("autoscale %s: %s", name, scaling.why)
                snapshot.declarations[name] = dataclasses.replace(
                    declaration, replicas=scaling.replicas, generation=generation
                )
        judged = [d for d in snapshot.declarations.values() if d.rollout is not None]
        figures = await self._release_figures(
            redis, [d for d in judged if d.rollout is not None and d.rollout.watched]
        )
        for declaration in judged:
            verdict = judge(declaration, snapshot, figures)
            if verdict is not None:
                await self._move(fence, snapshot, declaration, verdict, steered)
        self.declared = dict(snapshot.declarations)  # with the replicas just set
        return steered

    async def _move(
        self,
        fence: Fence,
        snapshot: Snapshot,
        declaration: Declaration,
        verdict: Advance | RollBack,
        steered: Steered,
    ) -> None:
        rollout = declaration.rollout
        assert rollout is not None
        name = declaration.name
        if isinstance(verdict, Advance):
            moved = rollout.moved(verdict.state, snapshot.now, verdict.why, fence.by)
            generation = await fence.declare(
                declaration,
                {"rollout": moved.encode()},
                kind="rollout",
                why=f"{verdict.state}: {verdict.why}",
            )
            if generation is not None:
                log.info("rollout of %s %s: %s", name, verdict.state, verdict.why)
                snapshot.declarations[name] = dataclasses.replace(
                    declaration, rollout=moved, generation=generation
                )
            return
        if not verdict.automatic:
            key = f"unhealthy {name} {rollout.new}"
            why = f"release {rollout.new} is worse (auto_rollback is off): {verdict.why}"
            steered.notes.append(Note("rollout-unhealthy", key, why, deployment=name))
            return
        why = f"release {rollout.new} rolled back to {declaration.previous_release}: {verdict.why}"
        fields = rollback_fields(declaration, now=snapshot.now, why=verdict.why, by=fence.by)
        if fields is None:
            return
        if await fence.declare(declaration, fields, kind="rollback", why=why) is not None:
            log.warning("rollback of %s: %s", name, why)
            steered.reread = True

    async def _release_figures(
        self, redis: AnyRedis, declarations: Iterable[Declaration]
    ) -> ReleaseFigures:
        wanted: list[tuple[str, str]] = []
        for declaration in declarations:
            rollout = declaration.rollout
            assert rollout is not None
            for metric in declaration.deployment.health_metrics:
                wanted += [(rollout.old, metric), (rollout.new, metric)]
        if not wanted:
            return {}
        async with redis.pipeline(transaction=False) as pipe:
            for release, metric in wanted:
                pipe.hgetall(self.registry.release_metrics(release, metric))
            replies = await pipe.execute()
        return {key: _figures(raw) for key, raw in zip(wanted, replies, strict=True)}


def _figures(raw: object) -> dict[str, float]:
    """A metrics hash as numbers (fields that are not numbers are left out)."""
    if not isinstance(raw, dict):
        return {}
    found: dict[str, float] = {}
    for key, value in raw.items():
        figure = number(reply_text(value), math.nan)
        if not math.isnan(figure):
            found[reply_text(key)] = figure
    return found
