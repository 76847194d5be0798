"""The names of a namespace's metrics hashes, found by SCAN in bounded steps.

Metrics hashes (``<ns>:metrics:<name>``) are not listed anywhere: they are found by
``SCAN MATCH <ns>:metrics:*``, which on a large Redis walks every key. A walk here is resumable:
``advance`` makes at most ``budget`` SCAN calls and carries on from the same cursors next time, so
a scrape costs a bounded amount of work however large the keyspace is. The names of the last
complete walk, together with those the walk in progress has found, are the answer; a hash that was
deleted disappears when the walk after its deletion completes. On Redis Cluster each primary is
walked with its own cursor.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from mpush.connection import AnyRedis, reply_text
from mpush.keys import ServiceKeys

__all__ = ["MetricNames"]

_COUNT = 1000  # keys a SCAN call looks at


class MetricNames:
    """Finds metrics hashes; ``limit`` caps how many names are kept, ``budget`` (None: no cap)
    the SCAN calls of one ``advance``."""

    def __init__(self, namespace: str, *, limit: int, budget: int | None = None) -> None:
        keys = ServiceKeys(namespace)
        self._pattern = keys.metrics_pattern
        self._prefix = keys.metrics("")
        self._limit = limit
        self._budget = budget
        self._known: dict[str, None] = {}  # names of the last complete walk
        self._found: dict[str, None] = {}  # names the walk in progress has found
        self._cursors: dict[str, int] | None = None  # node → cursor; None: no walk in progress
        self._over: tuple[bool, bool] = (False, False)  # over limit: (last complete walk, this)
        self.walking = False  # the last ``advance`` ended with its walk unfinished

    @property
    def overflow(self) -> bool:
        """More hashes than ``limit`` exist (seen by the last complete walk or the current one)."""
        return any(self._over)

    @property
    def names(self) -> list[str]:
        """What is known now: the last complete walk's names and the current walk's."""
        return list({**self._known, **self._found})[: self._limit]

    async def advance(self, redis: AnyRedis) -> None:
        """Walk on for up to ``budget`` SCAN calls; a complete walk replaces the known names."""
        if self._cursors is None:
            if isinstance(redis, RedisCluster):
                await redis.initialize()  # learns the nodes (nothing when it knows them)
            self._cursors = dict.fromkeys(_nodes(redis), 0)
            self._found = {}
            self._over = (self._over[0], False)
        calls = 0
        while self._cursors and (self._budget is None or calls < self._budget):
            node, cursor = next(iter(self._cursors.items()))
            cursor, keys = await self._scan(redis, node, cursor)
            calls += 1
            for raw in keys:
                name = reply_text(raw).removeprefix(self._prefix)
                if name in self._found:
                    continue
                if len(self._found) >= self._limit:
                    self._over = (self._over[0], True)
                    break
                self._found[name] = None
            if cursor == 0:
                del self._cursors[node]
            else:
                self._cursors[node] = cursor
        self.walking = bool(self._cursors)
        if not self._cursors:
            self._known, self._found, self._cursors = self._found, {}, None
            self._over = (self._over[1], False)

    async def _scan(self, redis: AnyRedis, node: str, cursor: int) -> tuple[int, list[object]]:
        if isinstance(redis, RedisCluster):
            target = redis.get_node(node_name=node)
            if target is None:  # gone since the walk began (a failover): the next walk asks anew
                return 0, []
            # With target_nodes, the Cluster client answers ({node: cursor}, keys).
            reply: Any = await redis.scan(
                cursor, match=self._pattern, count=_COUNT, target_nodes=target
            )
            cursors, keys = reply
            return int(cursors[node]), list(keys)
        cursor, keys = await redis.scan(cursor, match=self._pattern, count=_COUNT)
        return int(cursor), list(keys)


def _nodes(redis: AnyRedis) -> list[str]:
    if isinstance(redis, RedisCluster):
        return [node.name for node in redis.get_primaries()]
    return [""]
