"""The demo's control requests, ``/control/…`` on the site, served by ``mpush demo`` itself.

hrouter routes them to the queue ``<ns>:control`` (``DemoKeys.control``); the demo process takes
them from there with the loop of every Python handler (``http.serve.HandlerLoop``)::

    GET  /control/status          what the page shows that rquery cannot read: rcontrol's view of
                                  the namespace (``rcontrol status --json``'s, with the latest
                                  events), the load's figures, and where the page finds the rest
                                  (queues and metrics hashes, read through rquery)
    POST /control/load/RATE       the load's rate, requests a second (0 … ``load.MAX_RATE``)
    POST /control/scale/NAME/N    the replicas of a deployment with an autoscale table, within its
                                  bounds — only while rcontrol does not autoscale it (409 then)

These are the only writes the page can make: a rate and a replica count, each checked. A POST must
carry the header ``x-mpush-demo: control``, which a page of another site cannot send without
asking the gateway first (a CORS preflight it never answers): no request forged from elsewhere.
Everything else is answered 4xx.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from mpush.connection import AnyRedis
from mpush.demo.declaration import Declared
from mpush.demo.load import MAX_RATE, Load
from mpush.http.messages import Request, Response
from mpush.http.serve import HandlerLoop
from mpush.keys import DemoKeys, RcontrolKeys
from mpush.orchestration.rcontrol.events import latest
from mpush.orchestration.rcontrol.store import read_snapshot, scale_deployment
from mpush.orchestration.rcontrol.view import status_view
from mpush.retry import outage_of
from mpush.runtime.metrics import Metrics
from mpush.runtime.shutdown import Shutdown

__all__ = ["CONTROL_HEADER", "Console", "Refused"]

log = logging.getLogger(__name__)

CONTROL_HEADER = ("x-mpush-demo", "control")
EVENTS = 15  # events in a status
_FRESH = 0.5  # seconds a status is answered again as it is


class Refused(Exception):
    """A control request answered with a 4xx: status and why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class Console:
    """Serves ``<ns>:control``; see the module docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        layout: DemoKeys,
        declared: Declared,
        load: Load,
        site: dict[str, Any],
        *,
        pop_timeout: float = 0.5,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._keys = RcontrolKeys(layout.namespace)
        self._declared = declared
        self._load = load
        self._site = site
        self._pop_timeout = pop_timeout
        self._status: tuple[float, dict[str, Any]] | None = None

    async def run(self, shutdown: Shutdown, *, outage: str) -> None:
        """Answer control requests until ``shutdown``."""
        loop = HandlerLoop(
            self._redis,
            self._layout.control,
            self.handle,
            metrics=Metrics.disabled(),
            outage=outage_of(outage),
            name="demo-control",
            batch=16,
            concurrency=16,
            pop_timeout=self._pop_timeout,
        )
        await loop.run(shutdown)

    async def handle(self, request: Request) -> Response:
        try:
            return Response.json(request.id, await self._answer(request))
        except Refused as refused:
            return Response.text(request.id, refused.why + "\n", refused.status)

    async def _answer(self, request: Request) -> dict[str, Any]:
        parts = request.path.split("/")[2:]  # "", "control", …
        if parts == ["status"]:
            if request.method not in ("GET", "HEAD"):
                raise Refused(405, "status: GET it")
            return await self.status()
        if not parts or parts[0] not in ("load", "scale"):
            raise Refused(404, "no such control: /control/status, /control/load/RATE, "
                          "/control/scale/NAME/N")  # fmt: skip
        if request.method != "POST":
            raise Refused(405, f"{parts[0]}: POST it")
        name, value = CONTROL_HEADER
        given = {k.lower(): v for k, v in request.headers.items()}
        if given.get(name) != value:
            raise Refused(403, f"a control request carries the header {name}: {value}")
        if parts[0] == "load" and len(parts) == 2:
            return self._set_load(parts[1])
        if parts[0] == "scale" and len(parts) == 3:
            return await self._scale(parts[1], parts[2])
        raise Refused(404, "/control/load/RATE or /control/scale/NAME/N")

    def _set_load(self, text: str) -> dict[str, Any]:
        try:
            rate = float(text)
        except ValueError:
            rate = math.nan
        if not math.isfinite(rate) or not 0 <= rate <= MAX_RATE:
            raise Refused(400, f"a rate is 0 … {MAX_RATE:g} requests a second")
        self._load.set_rate(rate)
        return self._load.figures()

    async def _scale(self, name: str, text: str) -> dict[str, Any]:
        scalable = self._declared.scalable.get(name)
        if scalable is None:
            raise Refused(403, f"the page scales only {', '.join(sorted(self._declared.scalable))}")
        if self._declared.autoscaled:
            raise Refused(409, f"{name} is autoscaled: rcontrol sets its replicas")
        if not text.isdigit() or not scalable.min <= int(text) <= scalable.max:
            raise Refused(400, f"{name}: replicas {scalable.min} … {scalable.max}")
        replicas = int(text)
        changed, before = await scale_deployment(
            self._redis, self._keys, name, replicas, by="mpush demo's page"
        )
        self._status = None  # the next status shows it
        log.info("%s scaled %d -> %d from the page", name, before, replicas)
        return {"deployment": name, "replicas": replicas, "before": before, "changed": changed}

    async def status(self) -> dict[str, Any]:
        """rcontrol's view, the load and the site's layout (the rcontrol part at most
        ``_FRESH`` seconds old: any number of pages cost one read)."""
        now = time.monotonic()
        if self._status is None or now - self._status[0] > _FRESH:
            snapshot = await read_snapshot(self._redis, self._keys)
            events = await latest(self._redis, self._keys, EVENTS)
            self._status = (now, status_view(snapshot, self._layout.namespace, events))
        return {"site": self._site, "load": self._load.figures(), "rcontrol": self._status[1]}
