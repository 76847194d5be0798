"""Request/response over Redis lists for one process: what hgateway waits on.

``submit`` queues a request message with the function its response goes to. A single writer
task pushes everything queued with one multi-value ``LPUSH`` per queue per round trip (requests
arriving while a push is in flight go in the next one), and a single reader task pops batches from
this instance's reply list and calls each request's function by request id. So a thousand waiting
requests cost two Redis connections (each the task's own, ``mpush.runtime.pinned``), not a
thousand blocked ones, and no task of their own.

Responses for ids nobody waits for (late, or unknown) are dropped and counted. A response that is
not valid JSON per the contract is counted and set aside on ``<reply>:bad`` (the newest 100); when
its id can still be read, the waiting request gets a 502.

Every request waits ``timeout`` seconds at most: one task wakes at the oldest deadline and answers
what has expired with a 504 (requests are submitted in deadline order, so that is a scan of the
oldest few), instead of a timer per request. A request that could not be pushed (Redis
unreachable) is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from mpush.connection import AnyRedis
from mpush.exits import Exit
from mpush.http.messages import MessageError, Response, error_response, guess_id
from mpush.retry import Outage, Step, keep_trying
from mpush.runtime.batches import Writes, pump
from mpush.runtime.metrics import Metrics
from mpush.runtime.pinned import Command, PinnedConnection
from mpush.runtime.shutdown import Shutdown

__all__ = ["Answered", "Exchange", "unavailable"]

log = logging.getLogger(__name__)

METRIC = "hgateway"
_MIN_SLEEP = 0.005

Answered = Callable[[Response], None]  # where a request's response goes, called once


def unavailable(request_id: str) -> Response:
    """The answer to a request that could not be queued: 503, try again in a second."""
    return Response(
        request_id,
        503,
        {"content-type": "text/plain; charset=utf-8", "retry-after": "1"},
        b"503 Service Unavailable\n",
    )


class _Closed(Shutdown):
    """The exchange's own stop latch: it outlives the service's shutdown while requests drain."""

    def request(self, reason: str, exit_code: Exit = Exit.OK) -> None:
        self.reason = reason
        self._event.set()


class Exchange:
    """Pushes request messages to their queues; matches responses popped from ``reply``."""

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
        # request id → (where its response goes, its deadline on the loop's clock), in submit
        # order, which is deadline order: every request gets the same timeout
        self.pending: dict[str, tuple[Answered, float]] = {}
        self._outbox: dict[str, list[tuple[str, bytes]]] = {}  # queue → (id, message)
        self._queued = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stop = _Closed()
        self.lengths: dict[str, int] = {}  # queue → its length at the last push or check

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._seq)}"

    def submit(
        self, request_id: str, message: bytes, answered: Answered, queue: str | None = None
    ) -> None:
        """Queue ``message`` for ``queue`` (the request queue by default); its response, or a 504
        at the deadline, or a 503, goes to ``answered``."""
        if self._stop.requested:  # closed: nothing would push it or answer it
            answered(error_response(request_id, 503, "Service Unavailable"))
            return
        self.pending[request_id] = (answered, self._loop.time() + self._timeout)
        self._idle.clear()
        target = queue or self.queue
        waiting = self._outbox.get(target)
        if waiting is None:
            self._outbox[target] = [(request_id, message)]
        else:
            waiting.append((request_id, message))
        self._queued += 1
        self._wake.set()

    def queue_length(self, queue: str | None = None) -> int:
        return self.lengths.get(queue or self.queue, 0)

    def note_length(self, queue: str, length: int) -> None:
        self.lengths[queue] = length

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
        """Answer every pending request with a 503 (at the end of a drain); return how many."""
        waiting, self.pending = self.pending, {}
        for request_id, (answered, _) in waiting.items():
            self._call(answered, error_response(request_id, 503, "Service Unavailable"))
        self._idle.set()
        return len(waiting)

    async def run(self) -> None:
        """Run the writer and the reader until ``close``."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop())
            group.create_task(self._read_loop())
            group.create_task(self._expire_loop())

    def close(self) -> None:
        self._stop.request("request/response exchange closed")
        self._wake.set()

    def _take(self) -> list[tuple[str, list[tuple[str, bytes]]]]:
        """Up to ``batch`` queued messages, by queue, oldest first."""
        if self._queued <= self._batch:
            taken, self._outbox, self._queued = list(self._outbox.items()), {}, 0
            return taken
        taken = []
        room = self._batch
        for queue in list(self._outbox):
            waiting = self._outbox[queue]
            taken.append((queue, waiting[:room]))
            if len(waiting) > room:
                self._outbox[queue] = waiting[room:]
                room = 0
            else:
                del self._outbox[queue]
                room -= len(waiting)
            if not room:
                break
        self._queued -= self._batch - room
        return taken

    async def _write_loop(self) -> None:
        pinned = PinnedConnection(self._redis)
        taken: list[tuple[str, list[tuple[str, bytes]]]] = []

        async def push() -> Step | None:
            nonlocal taken
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                return Step.UNTOUCHED
            taken = self._take()
            commands: list[Command] = [
                ("LPUSH", queue, *[m for _, m in items]) for queue, items in taken
            ]
            if len(commands) == 1:
                lengths = [await pinned.call(*commands[0])]
            else:
                lengths = await pinned.pipeline(commands)
            for (queue, items), length in zip(taken, lengths, strict=True):
                if isinstance(length, Exception):  # not a list: nothing will answer them
                    log.warning("cannot push to %s: %s", queue, length)
                    self._unavailable(items)
                else:
                    self.lengths[queue] = int(length)
            taken = []
            return None

        def failed(_: Exception) -> None:  # those requests are answered 503 at once
            for _queue, items in taken:
                self._unavailable(items)

        try:
            await keep_trying(push, outage=self._outage, shutdown=self._stop, on_transient=failed)
        finally:
            await pinned.close()

    def _unavailable(self, items: list[tuple[str, bytes]]) -> None:
        for request_id, _ in items:
            entry = self._pop(request_id)
            if entry is not None:
                self._metrics.incr(METRIC, "unavailable")
                self._call(entry[0], unavailable(request_id))

    def _pop(self, request_id: str) -> tuple[Answered, float] | None:
        entry = self.pending.pop(request_id, None)
        if not self.pending:
            self._idle.set()
        return entry

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
                log.warning(
                    "502 for request %s: a malformed response, set aside: %s", request_id, exc
                )
                if request_id is not None:
                    self._deliver(error_response(request_id, 502, "Bad Gateway"))
                continue
            self._deliver(response)
        return writes

    def _deliver(self, response: Response) -> None:
        entry = self._pop(response.id)
        if entry is None:
            self._metrics.incr(METRIC, "late")
            return
        self._call(entry[0], response)

    @staticmethod
    def _call(answered: Answered, response: Response) -> None:
        try:
            answered(response)
        except Exception:  # one broken answer must not stop the others
            log.exception("answering request %s failed", response.id)

    async def _expire_loop(self) -> None:
        """Answer each request still waiting at its deadline with a 504."""
        while True:
            now = self._loop.time()
            wake = now + self._timeout
            expired = []
            for request_id, (_, deadline) in self.pending.items():  # oldest first
                if deadline > now:
                    wake = deadline
                    break
                expired.append(request_id)
            for request_id in expired:
                entry = self._pop(request_id)
                if entry is not None:
                    self._metrics.incr(METRIC, "timeout")
                    self._call(entry[0], error_response(request_id, 504, "Gateway Timeout"))
            if await self._stop.sleep(max(wake - now, _MIN_SLEEP)):
                return
