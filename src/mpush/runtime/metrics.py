"""Metrics hashes ``<ns>:metrics:<name>``: count, sum, max, histo0 … histo100 and plain counters.

Observations are gathered in memory and flushed every ``metrics_interval`` seconds by one atomic
script call per hash, so metrics cost no round trip per message. ``max`` is raised inside Redis
(an atomic max, unlike the original's read-then-write). ``histoK`` counts values in
``[K/100·T, (K+10)/100·T)`` of the metric's timeout T; ``histo100`` counts values ≥ T; the field
``histo_scale`` holds the T of the latest observations, so a reader can turn buckets to seconds.

A process that runs a release (``--service-release``, which rcontrol sets on every instance) also
adds each flush to ``<ns>:release:<release>:metrics:<name>``, which expires ``RELEASE_METRICS_TTL``
after its last write: the same figures per release, so rcontrol compares a new release's health
with the old one's while both run (docs/rcontrol.md, rollouts).

What was written is also kept in memory, added up since the process started, for the process's own
``/metrics`` (``snapshot``; ``mpush.runtime.prometheus``). A process without a namespace but with a
``--metrics-port`` gathers ``local`` metrics: kept for ``snapshot``, never written to Redis.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from mpush.connection import AnyRedis, load_lua
from mpush.keys import ServiceKeys
from mpush.retry import Outage, Step, keep_trying
from mpush.runtime.shutdown import Shutdown

__all__ = ["RELEASE_METRICS_TTL", "Metrics", "histo_bucket"]

log = logging.getLogger(__name__)

RELEASE_METRICS_TTL = 7 * 24 * 3600  # seconds a release's metrics outlive its last write


def histo_bucket(value: float, timeout: float) -> str:
    """The histogram field for ``value`` normalised by ``timeout``: histo0 … histo90, histo100."""
    if timeout <= 0 or value >= timeout:
        return "histo100"
    tenth = int(max(value, 0.0) * 10 // timeout)
    return f"histo{min(tenth, 9) * 10}"


@dataclass
class _Pending:
    count: int = 0
    total: float = 0.0
    peak: float | None = None
    scale: float | None = None  # the T of the latest histogram observation
    fields: Counter[str] = field(default_factory=Counter)

    def merge(self, other: _Pending) -> None:
        self.count += other.count
        self.total += other.total
        if other.peak is not None and (self.peak is None or other.peak > self.peak):
            self.peak = other.peak
        if other.scale is not None:
            self.scale = other.scale
        self.fields.update(other.fields)

    def as_fields(self) -> dict[str, float]:
        """The figures as the fields of a metrics hash: count, sum, max, histoK, counters."""
        fields: dict[str, float] = {}
        if self.count:
            fields["count"] = float(self.count)
            fields["sum"] = self.total
        if self.peak is not None:
            fields["max"] = self.peak
        if self.scale is not None:
            fields["histo_scale"] = self.scale
        fields.update((name, float(amount)) for name, amount in self.fields.items())
        return fields

    @property
    def size(self) -> int:
        """Observations and counter increments held."""
        counted = sum(n for name, n in self.fields.items() if not name.startswith("histo"))
        return self.count + counted


class Metrics:
    """Collects observations and counters; ``flush`` writes them; ``run`` flushes periodically."""

    def __init__(
        self,
        redis: AnyRedis | None,
        keys: ServiceKeys | None,
        outage: Outage | None = None,
        *,
        release: str | None = None,
    ) -> None:
        self._redis = redis
        self._release = release
        self._outage = outage or Outage("metrics redis")
        self._keys = keys
        self._script = redis.register_script(load_lua("metrics")) if redis is not None else None
        self._gather = self._script is not None
        self._pending: dict[str, _Pending] = {}  # gathered since the last flush
        self._unwritten: dict[str, _Pending] = {}  # taken by a flush that failed: written next
        self._release_unwritten: dict[str, _Pending] = {}  # the same for the release's copy
        self._written: dict[str, _Pending] = {}  # what was written since the process started

    @classmethod
    def disabled(cls) -> Metrics:
        """Metrics that gather nothing: for services run without a namespace."""
        return cls(None, None)

    @classmethod
    def local(cls) -> Metrics:
        """Metrics gathered for the process's own ``/metrics`` only, never written to Redis."""
        metrics = cls(None, None)
        metrics._gather = True
        return metrics

    @property
    def enabled(self) -> bool:
        return self._gather

    def snapshot(self) -> dict[str, tuple[dict[str, float], int]]:
        """Per metric name: (everything gathered since the start as hash fields, how much of it
        is not written yet)."""
        found: dict[str, tuple[dict[str, float], int]] = {}
        for name in {*self._written, *self._pending, *self._unwritten}:
            total, pending = _Pending(), _Pending()
            for part in (self._pending.get(name), self._unwritten.get(name)):
                if part is not None:
                    pending.merge(part)
            total.merge(pending)
            written = self._written.get(name)
            if written is not None:
                total.merge(written)
            found[name] = (total.as_fields(), pending.size)
        return found

    def observe(self, name: str, value: float, *, timeout: float | None = None) -> None:
        """Record one value: count, sum, max, and a histogram bucket when ``timeout`` is given."""
        if not self._gather:
            return
        entry = self._pending.get(name)
        if entry is None:  # not setdefault: that would build a _Pending on every call
            entry = self._pending[name] = _Pending()
        entry.count += 1
        entry.total += value
        if entry.peak is None or value > entry.peak:
            entry.peak = value
        if timeout is not None:
            entry.fields[histo_bucket(value, timeout)] += 1
            entry.scale = timeout

    def incr(self, name: str, counter: str, amount: int = 1) -> None:
        """Add ``amount`` to the plain counter field ``counter`` of metric ``name``."""
        if not self._gather or amount == 0:
            return
        entry = self._pending.get(name)
        if entry is None:
            entry = self._pending[name] = _Pending()
        entry.fields[counter] += amount

    async def flush(self) -> None:
        """Write everything gathered; on failure keep what was not written for the next flush
        and re-raise (each hash is written once: one that was is not written again)."""
        fresh, self._pending = self._pending, {}
        if self._script is None or self._keys is None:  # local: nothing to write to
            for name, entry in fresh.items():
                self._written.setdefault(name, _Pending()).merge(entry)
            return
        for name, entry in fresh.items():
            self._unwritten.setdefault(name, _Pending()).merge(entry)
            if self._release is not None:
                self._release_unwritten.setdefault(name, _Pending()).merge(entry)
        keys = self._keys
        release = self._release
        while self._release_unwritten and release is not None:
            name, entry = next(iter(self._release_unwritten.items()))
            await self._write(keys.release_metrics(release, name), entry, RELEASE_METRICS_TTL)
            del self._release_unwritten[name]
        while self._unwritten:
            name, entry = next(iter(self._unwritten.items()))
            await self._write(keys.metrics(name), entry, 0)
            self._written.setdefault(name, _Pending()).merge(self._unwritten.pop(name))

    async def _write(self, key: str, entry: _Pending, expire: int) -> None:
        assert self._script is not None
        args: list[str | int | float] = [
            entry.count,
            repr(entry.total),
            "" if entry.peak is None else repr(entry.peak),
            expire,
            "" if entry.scale is None else repr(entry.scale),
        ]
        for field_name, amount in entry.fields.items():
            args += [field_name, amount]
        await self._script(keys=[key], args=args)

    @property
    def _holding(self) -> bool:
        return bool(self._pending or self._unwritten or self._release_unwritten)

    async def run(self, shutdown: Shutdown, interval: float) -> None:
        """Flush every ``interval`` seconds until shutdown; Redis outages are waited out."""
        if not self.enabled:
            return

        async def flush() -> object:
            if not self._holding:
                return Step.UNTOUCHED  # nothing written: no news of Redis either way
            await self.flush()
            return None if self._script is not None else Step.UNTOUCHED

        await keep_trying(flush, outage=self._outage, shutdown=shutdown, every=interval)
