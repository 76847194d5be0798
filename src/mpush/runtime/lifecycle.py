"""The service registry of SPEC §2 for one running instance.

register  INCR <ns>:service:id → id; create <ns>:service:<id> (refusing an existing one) with host,
          pid, started and the service's own fields, EXPIRE service_expire; LPUSH the id on
          <ns>:service:ids and trim that list to exactly service_capacity entries.
renew     every service_renew s: only if `renewed` still holds the value we wrote last; else stop.
check     every service_check s: the key must still exist — DEL of it is a remote shutdown.
          ``last_check`` tells when the watcher last tried (liveness: ``runtime/health.py``).
gc        at startup: drop from <ns>:service:ids every id whose hash is gone, and from
          <ns>:service:labels every label whose instance is gone.
label     with a label (--service-label): the hash gets `label`, and <ns>:service:labels maps the
          label to the id, so whoever started the instance finds it.
standby   with --standby: the hash gets standby=1 and the instance BLPOPs <ns>:service:<id>:activate
          until something is pushed there; then standby=0, activated=<Redis TIME>, and it works.
deregister on a clean stop: DEL the hash, LREM the id, drop its label entry (if still its own).
data loss with outlive_data_loss (rcontrol's agents and controllers): a registration that vanished
          with the id counter (Redis lost its data, it was not a DEL) is made again, not obeyed.

Each step touches one key at a time (or one key atomically), so it works on Redis Cluster whatever
the namespace hashes to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpush.connection import AnyRedis, describe_client, load_lua, reply_text
from mpush.errors import FencedError, MpushError
from mpush.exits import Exit
from mpush.keys import ServiceKeys
from mpush.retry import Outage, Step, Stopped, keep_trying, outage_of, retrying
from mpush.runtime.shutdown import Shutdown

__all__ = ["Lifecycle", "LifecyclePolicy"]

log = logging.getLogger(__name__)

_REGISTER_ATTEMPTS = 5
_UNCONFIRMED_KEPT = 8  # renewals in a row whose replies may be lost before we give up on them


@dataclass(frozen=True)
class LifecyclePolicy:
    expire: int = 60
    renew: float = 15.0
    check: float = 1.0
    capacity: int = 100
    # Register again, instead of stopping, when the registration vanished because Redis lost its
    # data (the id counter is gone, or behind our id): for the processes that keep the others
    # running (rcontrol's agents and controllers), which must outlive a Redis that lost its data.
    outlive_data_loss: bool = False


class Lifecycle:
    """Registers one instance, keeps the registration alive, and notices when it is taken away."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: ServiceKeys,
        *,
        service: str,
        info: Mapping[str, str],
        policy: LifecyclePolicy,
        outage: Outage | None = None,
        label: str | None = None,
        standby: bool = False,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._service = service
        self._info = dict(info)
        self.label = label
        self.standby = standby
        self._policy = policy
        self._outage = outage or outage_of(describe_client(redis))
        self._register = redis.register_script(load_lua("register"))
        self._renew = redis.register_script(load_lua("renew"))
        self._unlabel = redis.register_script(load_lua("unlabel"))
        self._activated = redis.register_script(load_lua("activated"))
        self.instance_id: int | None = None
        self._renewed = ""  # the `renewed` value we wrote last, confirmed by its reply
        self._unconfirmed: list[str] = []  # values sent whose reply was lost: maybe written
        self._clock_offset = 0.0  # Redis TIME minus our clock, measured at registration
        self._fenced = False
        # When the watcher last made an attempt (time.monotonic()): liveness reads it.
        self.last_check = time.monotonic()

    @property
    def key(self) -> str:
        if self.instance_id is None:
            raise MpushError("not registered")
        return self._keys.instance(self.instance_id)

    async def register(self) -> int:
        """Run the startup GC, then register; return the new instance id."""
        await self.gc()
        fields = {
            "service": self._service,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            **self._info,
        }
        if self.label:
            fields["label"] = self.label
        if self.standby:
            fields["standby"] = "1"
        args: list[str | int] = [self._policy.expire]
        for name, value in fields.items():
            args += [name, value]
        for _ in range(_REGISTER_ATTEMPTS):
            instance_id = int(await self._redis.incr(self._keys.counter))
            stamp = await self._register(keys=[self._keys.instance(instance_id)], args=args)
            if stamp:
                break
            log.warning("%s already exists; taking the next id", self._keys.instance(instance_id))
        else:
            raise MpushError(f"could not register under {self._keys.counter}: ids keep colliding")
        self.instance_id = instance_id
        self._renewed = reply_text(stamp)
        self._clock_offset = float(self._renewed) - time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._keys.ids, instance_id)
            pipe.ltrim(self._keys.ids, 0, self._policy.capacity - 1)
            await pipe.execute()
        if self.label:  # another key: its own command (another slot on a Cluster)
            await self._redis.hset(self._keys.labels, self.label, str(instance_id))
        log.info("registered as %s%s", self.key, " (standby)" if self.standby else "")
        return instance_id

    async def gc(self) -> list[str]:
        """Drop ids whose registration hash no longer exists; return the dropped ids."""
        ids = [reply_text(raw) for raw in await self._redis.lrange(self._keys.ids, 0, -1)]
        dropped: list[str] = []
        for instance_id in dict.fromkeys(ids):
            if not await self._redis.exists(self._keys.instance(instance_id)):
                await self._redis.lrem(self._keys.ids, 0, instance_id)
                dropped.append(instance_id)
        if dropped:
            log.info("startup gc: dropped %d stale ids from %s", len(dropped), self._keys.ids)
        labels = await self._redis.hgetall(self._keys.labels)
        for raw_label, raw_id in labels.items():
            label, instance_id = reply_text(raw_label), reply_text(raw_id)
            if not await self._redis.exists(self._keys.instance(instance_id)):
                await self._unlabel(keys=[self._keys.labels], args=[label, instance_id])
        return dropped

    async def stand_by(self, shutdown: Shutdown, wait: float) -> bool:
        """Wait (BLPOP, ``wait`` s at a time) until activated; True then, False on shutdown.

        Activation marks the registration standby=0 with the time; a registration deleted while
        standing by is a remote shutdown, not an activation.
        """
        if self.instance_id is None:
            raise MpushError("not registered")
        key = self._keys.activation(self.instance_id)
        began = time.monotonic()
        timeout: Any = wait  # redis-py types it int; Redis takes decimals
        popped = False

        async def pop() -> Step | None:
            nonlocal popped
            popped = await self._redis.blpop([key], timeout) is not None
            return Step.DONE if popped else None

        await keep_trying(pop, outage=self._outage, shutdown=shutdown)
        if not popped or shutdown.requested:
            return False
        try:
            stamp = await retrying(
                lambda: self._activated(keys=[self.key]), outage=self._outage, shutdown=shutdown
            )
        except Stopped:
            return False
        if not stamp:
            shutdown.request(f"{self.key} was deleted while standing by (remote shutdown)")
            return False
        self.standby = False
        log.info("activated after %.1fs in standby", time.monotonic() - began)
        return True

    async def renew(self) -> bool:
        """Renew; False when the registration is gone. FencedError when someone changed it.

        The new `renewed` value is chosen here (Redis time, as measured at registration, in
        microseconds), so a renewal whose reply is lost is still recognised as ours by the next.
        """
        stamp = f"{max(time.time() + self._clock_offset, float(self._renewed) + 1e-6):.6f}"
        ours = [self._renewed, *self._unconfirmed]
        self._unconfirmed = [*self._unconfirmed[-(_UNCONFIRMED_KEPT - 1) :], stamp]
        status, value = await self._renew(keys=[self.key], args=[self._policy.expire, stamp, *ours])
        if int(status) == 1:
            self._renewed, self._unconfirmed = stamp, []
            return True
        if int(status) == 0:
            return False
        raise FencedError(
            f"{self.key} was renewed by someone else (renewed={reply_text(value)!r}, "
            f"ours {self._renewed!r}): stopping at once"
        )

    async def exists(self) -> bool:
        return bool(await self._redis.exists(self.key))

    async def watch(self, shutdown: Shutdown) -> None:
        """Until shutdown: check existence every `check` s and renew every `renew` s.

        A vanished key requests a clean stop (exit 0); a changed one a fenced stop. Redis outages
        are waited out with backoff: the registration survives them unless they outlast expiry.
        """
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self._policy.renew

        async def check() -> None:
            nonlocal renew_at
            self.last_check = time.monotonic()
            if loop.time() >= renew_at:
                alive = await self.renew()
                renew_at = loop.time() + self._policy.renew
            else:
                alive = await self.exists()
            if alive:
                return
            if self._policy.outlive_data_loss and await self._data_lost():
                log.warning("%s vanished with Redis's data: registering again", self.key)
                await self.register()
                renew_at = loop.time() + self._policy.renew
                return
            shutdown.request(f"{self.key} was deleted or expired (remote shutdown)")

        every = min(self._policy.check, self._policy.renew)
        try:
            await keep_trying(check, outage=self._outage, shutdown=shutdown, every=every)
        except FencedError as exc:
            self._fenced = True  # the key is someone else's now: never touch it again
            shutdown.request(str(exc), exit_code=Exit.FENCED)

    async def _data_lost(self) -> bool:
        """True when the id counter is gone or behind our id: Redis lost its data (a DEL of
        the registration leaves the counter as it was)."""
        counter = await self._redis.get(self._keys.counter)
        try:
            return counter is None or int(counter) < (self.instance_id or 0)
        except ValueError:
            return True

    async def deregister(self) -> None:
        """DEL our hash and LREM our id. Safe to call twice, or when never registered or fenced."""
        if self.instance_id is None or self._fenced:
            return
        key = self.key
        await self._redis.delete(key)
        await self._redis.lrem(self._keys.ids, 0, str(self.instance_id))
        if self.label:
            await self._unlabel(keys=[self._keys.labels], args=[self.label, str(self.instance_id)])
        log.info("deregistered %s", key)
        self.instance_id = None
