"""The active controller's steps, each one atomic Lua call guarded by its fencing token.

A controller holds the lease ``NS:rcontrol:lease`` (``mpush.runtime.lease``) with a token from the
counter in ``NS:rcontrol:state``; the state hash also holds the *epoch*, a random value made once.
Every step (``lua/rcontrol_place.lua``, ``rcontrol_activate.lua``, ``rcontrol_retire.lua``,
``rcontrol_restore.lua``, ``rcontrol_declare.lua``) first checks that the state still holds this
controller's epoch and token: a controller paused past its lease (someone took it since, with a
newer token) or one from before Redis lost its data (a new epoch) is refused, so two controllers
can never both assign.
A refused step raises ``FencedError``: the controller stands down and competes for the lease again.

Steps are never retried blindly: a step whose reply was lost may have been applied, so after any
failure the controller reads the state again and decides afresh (every step also checks, by
compare-and-set, that the assignment it changes is still what it read).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from mpush.connection import AnyRedis, load_lua, reply_text
from mpush.errors import FencedError
from mpush.keys import ACTIVATION_SUFFIX, RcontrolKeys, ServiceKeys
from mpush.orchestration.rcontrol.rollouts import declaration_fields
from mpush.orchestration.rcontrol.state import ACTIVE, Assignment, Declaration, Placed

__all__ = ["ACTIVATION_KEEP", "Fence", "declaration_args", "new_epoch"]

ACTIVATION_KEEP = 60  # seconds an activation push waits for a process that has not popped it


def new_epoch() -> str:
    return secrets.token_hex(8)


class Fence:
    """The steps of the controller that holds ``token`` in ``epoch``."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: RcontrolKeys,
        *,
        epoch: str,
        token: int,
        by: str,
        capacity: int,
    ) -> None:
        self._keys = keys
        self._registry = ServiceKeys(keys.namespace)
        self.epoch = epoch
        self.token = token
        self.by = by
        self._capacity = capacity
        self._place = redis.register_script(load_lua("rcontrol_place"))
        self._activate = redis.register_script(load_lua("rcontrol_activate"))
        self._retire = redis.register_script(load_lua("rcontrol_retire"))
        self._restore = redis.register_script(load_lua("rcontrol_restore"))
        self._declare = redis.register_script(load_lua("rcontrol_declare"))

    def _head(self) -> list[str | int]:
        return [self.epoch, self.token]

    def _base(self, *more: str) -> list[str]:
        keys = self._keys
        return [keys.state, keys.assignments, keys.events, *more]

    def _check(self, reply: Any, what: str) -> tuple[bool, str]:
        ok, detail = int(reply[0]) == 1, reply_text(reply[1])
        if not ok and detail == "fenced":
            raise FencedError(f"{what}: refused, another controller holds the lease now")
        return ok, detail

    async def place(self, assignment: Assignment, *, why: str) -> str:
        """Assign a new instance; its id."""
        reply = await self._place(
            keys=self._base(self._keys.host_wake(assignment.host)),
            args=[
                *self._head(),
                assignment.deployment,
                assignment.encode(),
                self._capacity,
                "place",
                why,
                self.by,
                assignment.host,
            ],
        )
        _, instance_id = self._check(reply, f"placing an instance of {assignment.deployment}")
        return instance_id

    async def activate(self, placed: Placed, *, why: str) -> bool:
        """Make a standby instance active and push its activation; False if it changed or is
        not registered (nothing was done)."""
        assignment = placed.assignment
        assert assignment is not None
        reply = await self._activate(
            keys=self._base(self._registry.labels),
            args=[
                *self._head(),
                placed.id,
                placed.raw,
                assignment.with_role(ACTIVE).encode(),
                self._registry.instance_prefix,
                ACTIVATION_SUFFIX,
                ACTIVATION_KEEP,
                self._capacity,
                why,
                self.by,
                assignment.deployment,
                assignment.host,
            ],
        )
        ok, _ = self._check(reply, f"activating {placed.id}")
        return ok

    async def retire(self, placed: Placed, *, kind: str, why: str) -> bool:
        """Take an instance away (its registration deleted: a graceful remote shutdown); False
        if its assignment changed since it was read."""
        assignment = placed.assignment
        host = assignment.host if assignment is not None else ""
        deployment = assignment.deployment if assignment is not None else ""
        reply = await self._retire(
            keys=self._base(self._registry.labels, self._keys.host_wake(host or "-")),
            args=[
                *self._head(),
                placed.id,
                placed.raw,
                self._registry.instance_prefix,
                self._capacity,
                kind,
                why,
                self.by,
                deployment,
                host,
            ],
        )
        ok, _ = self._check(reply, f"retiring {placed.id}")
        return ok

    async def restore(self, declarations: Sequence[Declaration], seq: int) -> int:
        """Declare again what a Redis that lost its data forgot; how many were restored."""
        keys = [
            *self._base(),
            self._keys.wake,
            *(self._keys.deployment(d.name) for d in declarations),
        ]
        keys[1] = self._keys.deployments  # this step's KEYS[2] is the set of names
        args: list[str | int] = [*self._head(), seq, self._capacity, self.by]
        for d in declarations:
            autoscaled = declaration_fields(d.deployment, d.replicas)["autoscaled"]
            rollout = "" if d.rollout is None else d.rollout.encode()
            args += [d.name, d.spec, d.replicas, d.release, d.generation]
            args += [autoscaled, rollout, d.previous, d.previous_release]
        restored = int(await self._restore(keys=keys, args=args))
        if restored < 0:
            raise FencedError("restoring declarations: refused, another controller leads now")
        return restored

    async def declare(
        self, declaration: Declaration, fields: Mapping[str, str], *, kind: str, why: str
    ) -> int | None:
        """Change a declaration (its replicas, its rollout, what runs), if it is still the
        generation that was read; its new generation, or None when it changed meanwhile."""
        reply = await self._declare(
            keys=[
                self._keys.state,
                self._keys.deployment(declaration.name),
                self._keys.events,
                self._keys.wake,
            ],
            args=declaration_args(
                declaration, fields, kind=kind, why=why, by=self.by, capacity=self._capacity,
                fence=(self.epoch, self.token),
            ),
        )  # fmt: skip
        ok, detail = self._check(reply, f"changing the declaration of {declaration.name}")
        return int(detail) if ok else None


def declaration_args(
    declaration: Declaration,
    fields: Mapping[str, str],
    *,
    kind: str,
    why: str,
    by: str,
    capacity: int,
    fence: tuple[str, int] | None,
) -> list[str | int]:
    """The arguments of ``lua/rcontrol_declare.lua`` (``fence`` None: a command's change)."""
    epoch, token = fence if fence is not None else ("", "")
    args: list[str | int] = [
        epoch, token, declaration.generation, capacity, kind, why, by, declaration.name,
    ]  # fmt: skip
    for name, value in fields.items():
        args += [name, value]
    return args
