"""Request/response over Redis lists for one process: what hgateway waits on.

``submit`` queues a request message and returns a future for its response. A single writer task
pushes everything queued with one multi-value ``LPUSH`` per round trip (requests arriving while a
push is in flight go in the next one), and a single reader task pops batches from this instance's
reply list and resolves the futures by request id. So a thousand waiting requests cost two Redis
connections (each the task's own, ``mpush.runtime.pinned``), not a thousand blocked ones.

Responses for ids nobody waits for (late, or unknown) are dropped and counted. A response that is
not valid JSON per the contract is counted and set aside on ``<reply>:bad`` (the newest 100); when
its id can still be read, the waiting request gets a 502.

Every request waits ``timeout`` seconds at most: one task wakes at the oldest deadline and resolves
what has expired with ``TIMED_OUT`` (requests are submitted in deadline order, so that is a scan of
the oldest few), instead of a timer per request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from mpush.connection import AnyRedis
from mpush.exits import Exit
from mpush.http.messages import MessageError, Response, error_response, guess_id
from mpush.retry import Outage, Step, keep_trying
from mpush.runtime.batches import Writes, pump
from mpush.runtime.metrics import Metrics
from mpush.runtime.pinned import PinnedConnection
from mpush.runtime.shutdown import Shutdown

__all__ = ["TIMED_OUT", "Exchange", "QueueUnavailable"]

log = logging.getLogger(__name__)

METRIC = "hgateway"
TIMED_OUT = Response("-", 504, {}, b"504 Gateway Timeout\n")  # the answer at a deadline
_MIN_SLEEP = 0.005


class QueueUnavailable(Exception):
    """The request could not be pushed: Redis is unreachable."""


class _Closed(Shutdown):
    """The exchange's own stop latch: it outlives the service's shutdown while requests drain."""

    def request(self, reason: str, exit_code: Exit = Exit.OK) -> None:
        self.reason = reason
        self._event.set()


class Exchange:
    """Pushes request messages to ``queue``; matches responses popped from ``reply``."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        queue: str,
        reply: str,
        id_prefix: str,
        batch: int,
        timeout: float,
        pop_timeout: float,
        metrics: Metrics,
        outage: Outage,
    ) -> None:
        self._redis = redis
        self.queue = queue
        self.reply = reply
        self._prefix = id_prefix
        self._batch = batch
        self._timeout = timeout
        self._pop_timeout = pop_timeout
        self._metrics = metrics
        self._outage = outage
        self._seq = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        # request id → (the future of its response, its deadline on the loop's clock), in submit
        # order, which is deadline order: every request gets the same timeout
        self.pending: dict[str, tuple[asyncio.Future[Response], float]] = {}
        self._outbox: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stop = _Closed()
        self.queue_length = 0

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._seq)}"

    def submit(self, request_id: str, message: bytes) -> asyncio.Future[Response]:
        """Queue ``message`` for the request queue; the future gets the response, or TIMED_OUT."""
        future: asyncio.Future[Response] = self._loop.create_future()
        if self._stop.requested:  # closed: nothing would push it or answer it
            future.set_result(error_response(request_id, 503, "Service Unavailable"))
            return future
        self.pending[request_id] = (future, self._loop.time() + self._timeout)
        self._idle.clear()
        self._outbox.append((request_id, message))
        self._wake.set()
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for ``request_id`` (answered otherwise, or timed out)."""
        self.pending.pop(request_id, None)
        if not self.pending:
            self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every pending request to be answered; True if they were."""
        if not self.pending:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def answer_all(self) -> int:
        """Resolve every pending request with a 503 (at the end of a drain); return how many."""
        count = 0
        for request_id, (future, _) in list(self.pending.items()):
            if not future.done():
                future.set_result(error_response(request_id, 503, "Service Unavailable"))
                count += 1
        self.pending.clear()
        return count

    async def run(self) -> None:
        """Run the writer and the reader until ``close``."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop())
            group.create_task(self._read_loop())
            group.create_task(self._expire_loop())

    def close(self) -> None:
        self._stop.request("request/response exchange closed")
        self._wake.set()

    async def _write_loop(self) -> None:
        pinned = PinnedConnection(self._redis)
        taken: list[tuple[str, bytes]] = []

        async def push() -> Step | None:
            nonlocal taken
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                return Step.UNTOUCHED
            taken, self._outbox = self._outbox[: self._batch], self._outbox[self._batch :]
            length = await pinned.call("LPUSH", self.queue, *[message for _, message in taken])
            self.note_length(int(length))
            return None

        def unavailable(exc: Exception) -> None:  # those requests are answered 503 at once
            for request_id, _ in taken:
                entry = self.pending.get(request_id)
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(QueueUnavailable(str(exc)))

        try:
            await keep_trying(
                push, outage=self._outage, shutdown=self._stop, on_transient=unavailable
            )
        finally:
            await pinned.close()

    def note_length(self, length: int) -> None:
        self.queue_length = length

    async def _read_loop(self) -> None:
        await pump(
            self._redis,
            self.reply,
            self._resolve,
            count=self._batch,
            pop_timeout=self._pop_timeout,
            shutdown=self._stop,
            outage=self._outage,
        )

    async def _resolve(self, batch: list[bytes]) -> Writes:
        writes = Writes()
        for raw in batch:
            try:
                response = Response.from_json(raw)
            except MessageError as exc:
                writes.set_aside(self.reply, raw)
                self._metrics.incr(METRIC, "malformed")
                request_id = guess_id(raw)
                log.debug("malformed response (%s) for id %s", exc, request_id)
                if request_id is not None:
                    self._deliver(error_response(request_id, 502, "Bad Gateway"))
                continue
            self._deliver(response)
        return writes

    def _deliver(self, response: Response) -> None:
        entry = self.pending.pop(response.id, None)
        if entry is None or entry[0].done():
            self._metrics.incr(METRIC, "late")
            return
        entry[0].set_result(response)

    async def _expire_loop(self) -> None:
        """Resolve each request still waiting at its deadline with TIMED_OUT."""
        while True:
            now = self._loop.time()
            wake = now + self._timeout
            for future, deadline in self.pending.values():  # oldest first
                if deadline > now:
                    wake = deadline
                    break
                if not future.done():
                    future.set_result(TIMED_OUT)  # the waiting request forgets it
            if await self._stop.sleep(max(wake - now, _MIN_SLEEP)):
                return
