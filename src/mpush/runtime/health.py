"""What ``/healthz`` and ``/readyz`` answer for one process, on its ``--metrics-port`` listener.

An orchestrator (Kubernetes' kubelet, a load balancer) asks two questions:

- **live** (``/healthz``): should this process be left running? Yes while its event loop answers
  (the answer itself is the proof: a blocked loop answers nothing, and the probe times out) and
  its registry watcher — the loop that renews the registration and notices a remote shutdown —
  has made an attempt within ``stale_after`` seconds. An outage of Redis is no reason to restart
  it: the watcher keeps trying (with backoff), so it stays live; only a watcher that stopped trying
  is stuck. While starting (waiting for Redis, checking, registering) it is live: the start is
  bounded by ``startup_timeout``, after which the process exits by itself.
- **ready** (``/readyz``): should it be given work? Yes once it is registered (with a namespace),
  not standing by for activation, and every Redis it uses answers a PING within
  ``ping_timeout``. Concurrent probes share one round of PINGs, whose result serves for
  ``ping_every`` seconds, so a flood of probes costs Redis one PING a second.

Each answer is ``(ok, reason)``: 200 or 503 with the reason as a line of text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mpush.connection import AnyRedis, describe_client
from mpush.runtime.lifecycle import Lifecycle
from mpush.runtime.shutdown import Shutdown

__all__ = ["Health", "HealthPolicy", "Verdict"]

Verdict = tuple[bool, str]


@dataclass(frozen=True)
class HealthPolicy:
    stale_after: float = 60.0  # seconds the registry watcher may go without an attempt
    ping_timeout: float = 1.0  # seconds a Redis has to answer a readiness PING
    ping_every: float = 1.0  # seconds one round of PINGs answers readiness probes


class Health:
    """The two verdicts of one process; the runner tells it how far the start has come."""

    def __init__(
        self,
        shutdown: Shutdown,
        policy: HealthPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shutdown = shutdown
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._clients: list[AnyRedis] = []
        self._lifecycle: Lifecycle | None = None
        self._working = False
        self._pinged_at = float("-inf")
        self._ping_verdict: Verdict = (False, "not checked yet")
        self._pinging: asyncio.Task[Verdict] | None = None

    def started(self, clients: Sequence[AnyRedis], lifecycle: Lifecycle | None) -> None:
        """The process is up: ``clients`` are the Redis it uses (each PINGed for readiness), and
        ``lifecycle`` its registration (None without a namespace)."""
        self._clients = list(dict.fromkeys(clients))
        self._lifecycle = lifecycle
        self._working = True

    async def live(self) -> Verdict:
        if self._shutdown.requested:
            return True, f"stopping: {self._shutdown.reason}"
        lifecycle = self._lifecycle
        if not self._working or lifecycle is None:
            return True, "starting" if not self._working else "alive"
        since = self._clock() - lifecycle.last_check
        if since > self.policy.stale_after:
            return False, (
                f"stuck: the registry watcher made no attempt for {since:.0f}s "
                f"(allowed {self.policy.stale_after:.0f}s)"
            )
        return True, "alive"

    async def ready(self) -> Verdict:
        if self._shutdown.requested:
            return False, f"stopping: {self._shutdown.reason}"
        if not self._working:
            return False, "starting: not registered yet"
        lifecycle = self._lifecycle
        if lifecycle is not None:
            if lifecycle.instance_id is None:
                return False, "not registered"
            if lifecycle.standby:
                return False, "standing by for activation"
        return await self._pinged()

    async def _pinged(self) -> Verdict:
        if self._clock() - self._pinged_at < self.policy.ping_every:
            return self._ping_verdict
        if self._pinging is None:
            self._pinging = asyncio.create_task(self._ping_all())
        # A probe that goes away does not cancel the round the others wait on.
        return await asyncio.shield(self._pinging)

    async def _ping_all(self) -> Verdict:
        verdict: Verdict = (True, "ready")
        try:
            for client in self._clients:
                what = describe_client(client)
                try:
                    async with asyncio.timeout(self.policy.ping_timeout):
                        await client.ping()
                except TimeoutError:
                    verdict = False, f"{what} did not answer within {self.policy.ping_timeout:g}s"
                    break
                except Exception as exc:  # any failure to answer means: not ready now
                    verdict = False, f"{what} did not answer: {exc}"
                    break
        finally:
            self._pinged_at = self._clock()
            self._pinging = None
        self._ping_verdict = verdict
        return verdict
