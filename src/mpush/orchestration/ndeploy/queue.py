"""ndeploy's request queue as one instance uses it: claim, answer, give back, recover.

- claim: ``BLMOVE <ns>:req <ns>:inflight:<me> RIGHT LEFT`` — the id moves inside Redis into our own
  in-flight list, so two instances never get the same request and a request is never only in a
  process's memory.
- answer (``lua/ndeploy_finish.lua``): remove the id from our in-flight list, write the response and
  push the notification, in one atomic step — only if the id is still ours.
- give back (``lua/ndeploy_requeue.lua``): on shutdown, our in-flight ids go back to the queue's
  taking end.
- recover: the same script, for every instance in ``<ns>:inflight`` whose registration is gone; it
  checks the registration inside the script, so a live instance's claims are never taken.

Every key of one script call is under the namespace: on Redis Cluster the namespace needs a hash
tag (``{demo}:ndeploy``) so they share a slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mpush.connection import AnyRedis, load_lua, reply_text
from mpush.errors import ConfigError
from mpush.keys import NdeployKeys, ServiceKeys, check_same_slot, hash_tag

__all__ = ["RequestQueue", "check_cluster_namespace"]


def check_cluster_namespace(namespace: str) -> None:
    """ConfigError unless every key ndeploy uses together hashes to one Redis Cluster slot."""
    keys = NdeployKeys(namespace)
    together = [
        keys.queue,
        keys.inflight(1),
        keys.holders,
        ServiceKeys(namespace).instance(1),
        keys.request(1),
        keys.response(1),
        keys.done(1),
    ]
    if hash_tag(namespace) is None:
        head, _, rest = namespace.partition(":")
        example = f"{{{head}}}:{rest}" if rest else f"{{{head}}}"
        raise ConfigError(
            "service_namespace",
            f"on a Redis Cluster ndeploy's keys ({', '.join(together[:4])}, …) must share one "
            f"hash slot for its atomic claims and answers: use a hash-tagged namespace, "
            f"e.g. --service-namespace {example}",
        )
    check_same_slot(together, what="ndeploy's atomic claim, recovery and answer")


class RequestQueue:
    """The queue operations of instance ``instance_id``."""

    def __init__(self, redis: AnyRedis, namespace: str, instance_id: int) -> None:
        self._redis = redis
        self.keys = NdeployKeys(namespace)
        self._services = ServiceKeys(namespace)
        self.instance_id = instance_id
        self.inflight = self.keys.inflight(instance_id)
        self._requeue = redis.register_script(load_lua("ndeploy_requeue"))
        self._finish = redis.register_script(load_lua("ndeploy_finish"))

    async def claim(self, wait: float) -> str | None:
        """Wait up to ``wait`` s for a request id and move it into our in-flight list."""
        # Joining the holder set before every claim keeps it right even after a sweep that
        # wrongly judged us dead (registration lapsed during an outage) removed us from it.
        await self._redis.sadd(self.keys.holders, str(self.instance_id))
        seconds: Any = max(wait, 0.01)  # redis-py types it int; Redis takes decimals
        raw = await self._redis.blmove(self.keys.queue, self.inflight, seconds, "RIGHT", "LEFT")
        return None if raw is None else reply_text(raw)

    async def held(self) -> str | None:
        """The oldest id already in our in-flight list (normally there is none)."""
        raw = await self._redis.lindex(self.inflight, -1)
        return None if raw is None else reply_text(raw)

    async def load(self, request_id: int) -> tuple[dict[str, str], int]:
        """The request hash and this claim's attempt number (0 when the hash does not exist)."""
        key = self.keys.request(request_id)
        fields = {reply_text(k): reply_text(v) for k, v in (await self._redis.hgetall(key)).items()}
        if not fields:
            return {}, 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, mapping={"instance": str(self.instance_id), "step": "claimed"})
            attempts, _ = await pipe.execute()
        return fields, int(attempts)

    async def set_step(self, request_id: int, step: str) -> None:
        await self._redis.hset(self.keys.request(request_id), "step", step)

    async def unclaim_attempt(self, request_id: int) -> None:
        """An attempt that we abandon on shutdown does not count towards max_attempts."""
        await self._redis.hincrby(self.keys.request(request_id), "attempts", -1)

    async def set_aside(self, raw_id: str) -> None:
        """Move an entry that is not a request id from our in-flight list to NS:req:malformed."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self.inflight, 1, raw_id)
            pipe.lpush(self.keys.malformed, raw_id)
            await pipe.execute()

    async def finish(
        self, request_id: int, outcome: str, fields: Mapping[str, str], *, notify_expire: int
    ) -> str | None:
        """Write the response and notify; the ``finished`` stamp, or None if no longer ours."""
        args: list[str | int] = [str(request_id), outcome, notify_expire]
        for name, value in fields.items():
            args += [name, value]
        keys = [
            self.inflight,
            self.keys.response(request_id),
            self.keys.done(request_id),
            self.keys.request(request_id),
        ]
        stamp = await self._finish(keys=keys, args=args)
        return None if stamp is None else reply_text(stamp)

    async def give_back(self) -> int:
        """Put every id we hold back at the taking end of the queue; leave the holder set."""
        return await self._requeue_of(self.instance_id, force=True)

    async def recover(self) -> dict[str, int]:
        """Requeue what instances whose registration is gone still hold: {instance: ids}."""
        recovered: dict[str, int] = {}
        for raw in await self._redis.smembers(self.keys.holders):
            owner = reply_text(raw)
            if owner == str(self.instance_id):
                continue
            moved = await self._requeue_of(owner, force=False)
            if moved > 0:
                recovered[owner] = moved
        return recovered

    async def _requeue_of(self, owner: int | str, *, force: bool) -> int:
        keys = [
            self._services.instance(owner),
            self.keys.inflight(owner),
            self.keys.queue,
            self.keys.holders,
        ]
        return int(await self._requeue(keys=keys, args=[str(owner), "1" if force else "0"]))

    async def now(self) -> str:
        """Redis TIME as ``seconds.micros``."""
        seconds, micros = await self._redis.time()
        return f"{int(seconds)}.{int(micros):06d}"
