"""The cross-Redis move: one active mover among replicas, exactly once in effect, in order.

Replicas elect one active mover through a lease on the source Redis (``runtime/lease.py``); the
others stand by and take over within the lease TTL when it dies. The active mover repeats:

1. *claim* (source, ``lua/vpush_claim.lua``): acknowledge the batch the destination confirmed and
   take the next one into the in-flight list, numbering its messages with consecutive ids — or,
   after a takeover or a lost reply, hand back the batch that is still in flight;
2. *deliver* (destination, ``lua/vpush_deliver.lua``): push the batch, skipping ids already
   applied, unless a mover with a newer fencing token has written there.

Delivery is at-least-once on the wire (a batch is re-sent after a crash, a timeout or a takeover)
and exactly once in effect (the destination applies each id once, in order). A mover paused past
its lease is refused twice: by the source when it claims or acknowledges, by the destination
when its late write arrives. Outages of either Redis are waited out with backoff, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from mpush.config import VpushSettings
from mpush.connection import AnyRedis, describe_client, describe_url, reply_text
from mpush.errors import ConfigError, TransientError
from mpush.keys import VpushKeys
from mpush.retry import Backoff, Outage, Sleeper, Stopped, outage_of, retrying
from mpush.runtime.lease import Lease
from mpush.runtime.metrics import Metrics
from mpush.runtime.pinned import PinnedScript
from mpush.runtime.runner import Context
from mpush.runtime.shutdown import Shutdown
from mpush.runtime.stage import wait_for_input

__all__ = ["Batch", "Relay", "with_provenance"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_RELEASE_TIMEOUT = 2.0
_LAG_EVERY = 0.1  # seconds between samples of the input's length (a gauge, not per message)
_MOVED = "vpush_moved"


@dataclass(slots=True)
class Batch:
    """Messages to deliver, oldest first; the first has id ``base``, the others follow by one."""

    epoch: bytes
    base: int
    messages: Sequence[bytes]


class _Link:
    """One Redis as the relay sees it: its outage record, a backoff, and outage seconds as a
    metric. ``call`` runs one call through ``mpush.retry.retrying``."""

    def __init__(self, outage: Outage, metrics: Metrics, metric: str, cap: float) -> None:
        self.outage = outage
        self._metrics = metrics
        self._metric = metric
        self._backoff = Backoff(cap=cap)
        self._since: float | None = None

    async def call(
        self,
        call: Callable[[], Awaitable[T]],
        stopping: Sleeper,
        on_transient: Callable[[TransientError], object] | None = None,
    ) -> T:
        """``call()`` until it answers; ``Stopped`` when ``stopping`` is set during an outage."""

        def failed(exc: TransientError) -> None:
            if self._since is None:
                self._since = time.monotonic()
            if on_transient is not None:
                on_transient(exc)

        result = await retrying(
            call, outage=self.outage, shutdown=stopping, backoff=self._backoff, on_transient=failed
        )
        if self._since is not None:
            self._metrics.observe(self._metric, time.monotonic() - self._since)
            self._since = None
        self._backoff.reset()
        return result


class _Stopping:
    """Shutdown, or the lease lost: what ends the relay's waits (``mpush.retry.Sleeper``)."""

    def __init__(self, shutdown: Shutdown, lost: asyncio.Event | None = None) -> None:
        self._shutdown = shutdown
        self._lost = lost

    @property
    def requested(self) -> bool:
        return self._shutdown.requested or (self._lost is not None and self._lost.is_set())

    async def sleep(self, seconds: float) -> bool:
        if self._lost is None:
            return await self._shutdown.sleep(seconds)
        waits = [
            asyncio.ensure_future(self._shutdown.wait()),
            asyncio.ensure_future(self._lost.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self.requested


class Relay:
    """Stands by until it holds the lease, then claims and delivers batches until it loses it."""

    def __init__(
        self,
        settings: VpushSettings,
        keys: VpushKeys,
        ctx: Context,
        source: AnyRedis,
        dest: AnyRedis,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.ctx = ctx
        self.shutdown = ctx.shutdown
        self.metrics = ctx.metrics
        owner = f"{socket.gethostname()}:{os.getpid()}"
        if ctx.instance_id is not None:
            owner += f":{ctx.instance_id}"
        self.lease = Lease(ctx.redis, keys.lease, keys.state, owner=owner, ttl=settings.lease_ttl)
        self._source = source
        # The hot path: one call to each side per batch, each over a connection of its own.
        self._claim = PinnedScript(source, "vpush_claim")
        self._deliver = PinnedScript(dest, "vpush_deliver")
        self._source_keys = [key.encode() for key in keys.source]
        self._dest_keys: dict[bytes, list[bytes]] = {}
        self._lag_at = 0.0
        # A stalled server counts as down after this long (a blocking wait adds pop_timeout).
        self._timeout = settings.out_timeout
        cap = min(5.0, settings.lease_ttl / 3)
        self.source = _Link(ctx.outage, ctx.metrics, "vpush_outage_source", cap)
        dest_outage = outage_of(f"destination {describe_client(dest)}")
        self.destination = _Link(dest_outage, ctx.metrics, "vpush_outage_destination", cap)
        self._epoch = secrets.token_hex(8)  # adopted only if the route has no epoch yet
        self._floor = 0  # the next token must exceed any the destination showed us
        self._source_label = f"{describe_url(settings.redis)}#{keys.input}"

    async def run(self) -> None:
        while await self._standby():
            await self._active()

    async def close(self) -> None:
        for script in (self._claim, self._deliver):
            with contextlib.suppress(Exception):
                await script.close()

    async def _standby(self) -> bool:
        """Wait until we hold the lease (True) or shutdown is requested (False)."""
        announced = False
        stopping = _Stopping(self.shutdown)
        while not self.shutdown.requested:
            try:
                state = await self.source.call(lambda: self.lease.acquire(self._floor), stopping)
            except Stopped:
                return False
            if state.acquired:
                log.info("active mover of %s (fencing token %d)", self.keys.input, state.token)
                self.metrics.incr(_MOVED, "takeovers")
                return True
            if not announced:
                log.info("standing by: %s holds the lease of %s", state.holder, self.keys.input)
                announced = True
            # Wake at the holder's expiry, and every pop_timeout to notice a clean release.
            await self.shutdown.sleep(min(state.wait + 0.005, self.settings.pop_timeout))
        return False

    async def _active(self) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self.lease.hold(lost, self.ctx.outage))
        heartbeat.add_done_callback(lambda _: lost.set())  # however it ends, stop moving
        try:
            await self._move(lost)
        finally:
            heartbeat.cancel()
            (outcome,) = await asyncio.gather(heartbeat, return_exceptions=True)
            await self._release()
            if isinstance(outcome, Exception):
                raise outcome

    async def _release(self) -> None:
        """Give the lease up (if still ours) so a standby takes over at once; best effort."""
        if self.lease.token is None:
            return
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await self.lease.release()
        except Exception as exc:  # it expires by itself within the TTL
            log.warning("could not release the lease of %s: %r", self.keys.input, exc)

    async def _move(self, lost: asyncio.Event) -> None:
        """Claim and deliver until shutdown, or until the lease or the destination fences us."""
        ack = ""
        while not (self.shutdown.requested or lost.is_set()):
            batch = await self._claim_batch(ack, self.settings.batch, lost)
            if batch is None:
                return
            ack = ""
            if not batch.messages:
                await self._wait_for_input()
                continue
            if not await self._deliver_batch(batch, lost):
                return
            ack = str(batch.base)
        if ack and not lost.is_set():
            await self._claim_batch(ack, 0, lost)  # finish the step in hand: acknowledge it

    async def _claim_batch(self, ack: str, batch: int, lost: asyncio.Event) -> Batch | None:
        """Acknowledge ``ack`` and get the batch to deliver; None when we must stand down."""
        token = self.lease.token
        if token is None:
            return None

        async def claim() -> Any:
            async with asyncio.timeout(self._timeout):
                return await self._claim(self._source_keys, (token, ack, batch, self._epoch))

        try:
            reply = await self.source.call(claim, _Stopping(self.shutdown, lost))
        except Stopped:
            return None
        if int(reply[0]) == 0:
            log.warning("lease of %s lost (token %d): standing down", self.keys.input, token)
            self.lease.token = None
            lost.set()
            return None
        if reply[3]:  # acknowledged: how long that batch was in flight
            age = int(reply[4]) / 1000
            self.metrics.observe("vpush_inflight_age", age, timeout=self.settings.lease_ttl)
        now = time.monotonic()
        if batch and now - self._lag_at >= _LAG_EVERY:
            self._lag_at = now
            self.metrics.observe("vpush_lag", int(reply[5]))
        return Batch(reply[1], int(reply[2]), reply[6:])

    async def _wait_for_input(self) -> None:
        """Block until the input has a message or pop_timeout passes; holds nothing."""
        pop_timeout = self.settings.pop_timeout

        async def wait() -> None:
            async with asyncio.timeout(pop_timeout + self._timeout):
                await wait_for_input(self._source, self.keys.input, pop_timeout)

        with contextlib.suppress(Stopped):
            await self.source.call(wait, _Stopping(self.shutdown))

    async def _deliver_batch(self, batch: Batch, lost: asyncio.Event) -> bool:
        """Push ``batch`` to the destination, retrying through outages; False to stand down."""
        token = self.lease.token
        if token is None:
            return False
        messages = batch.messages
        if self.settings.provenance:
            moved_at = int(time.time() * 1000)
            messages = [with_provenance(m, self._source_label, moved_at) for m in messages]
        keys = self._dest_keys.get(batch.epoch) or self._dedupe_keys(batch.epoch)
        args: list[Any] = [token, batch.base, self.settings.dedupe_window, *messages]

        async def deliver() -> Any:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._deliver(keys, args)
            except ResponseError as exc:
                if "WRONGTYPE" in str(exc):
                    raise ConfigError(
                        "out", f"{self.keys.out!r} on the destination is not a list"
                    ) from None
                raise

        def retried(_: Exception) -> None:
            self.metrics.incr(_MOVED, "retries")

        try:
            reply = await self.destination.call(deliver, _Stopping(self.shutdown, lost), retried)
        except Stopped:
            return False
        if int(reply[0]) == 0:
            newer = int(reply[1])
            log.warning(
                "fenced at the destination: token %d, but token %d has written to %s; "
                "standing down",
                token,
                newer,
                self.keys.out,
            )
            self.metrics.incr(_MOVED, "fenced")
            self._floor = newer + 1
            return False
        applied, skipped = int(reply[1]), int(reply[2])
        if applied:
            self.metrics.observe(_MOVED, applied, timeout=self.settings.batch)
        if skipped:
            self.metrics.incr(_MOVED, "duplicates", skipped)
        return True

    def _dedupe_keys(self, epoch: bytes) -> list[bytes]:
        """The destination's keys for the route epoch ``epoch``: out list, dedupe state."""
        keys = [self.keys.out.encode(), self.keys.dedupe(reply_text(epoch)).encode()]
        self._dest_keys = {epoch: keys}  # one epoch at a time
        return keys


def with_provenance(message: bytes, source: str, moved_at_ms: int) -> bytes:
    """``message`` with ``meta.vpush = {source, moved_at}`` when it is a JSON object, else as is.

    A ``meta`` that is present but not an object is left alone (and so is the message).
    """
    if message.lstrip()[:1] != b"{":
        return message
    try:
        doc = json.loads(message)
    except ValueError:  # includes UnicodeDecodeError
        return message
    if not isinstance(doc, dict):
        return message
    meta = doc.setdefault("meta", {})
    if not isinstance(meta, dict):
        return message
    meta["vpush"] = {"source": source, "moved_at": moved_at_ms}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
