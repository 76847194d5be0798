"""Registrations of requests in flight, for mdispatch to route responses that carry only an id.

Key layout (``PREFIX`` is ``track_prefix``: ``<ns>:track`` by default, ``mdispatch:req`` without a
namespace)::

    PREFIX:<request id>   string  JSON {"reply": LIST, "deadline": T, "ts": T0, "route": NAME}
                                  PXAT deadline + linger: kept a while past the deadline so that a
                                  late response is told apart from one for an unknown id.

Anyone can register (hrouter does for every request it routes; mdispatch does for requests it
forwards); mdispatch reads a registration with GETDEL when the response comes, so each response is
delivered once. Requests answered directly to their reply list leave the registration to expire.
Each key is touched alone, so any prefix works on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from mpush.epoch import is_epoch
from mpush.http.messages import ReplyAddress

__all__ = ["Registration"]

LINGER = 10.0  # seconds a registration outlives its deadline at least


@dataclass(frozen=True)
class Registration:
    reply: str
    deadline: float
    ts: float
    route: str

    @property
    def timeout(self) -> float:
        return max(self.deadline - self.ts, 0.001)

    def expire_at_ms(self) -> int:
        """When the registration key expires (PXAT), epoch milliseconds."""
        return int((self.deadline + max(LINGER, self.timeout)) * 1000)

    def to_json(self) -> str:
        doc = {"reply": self.reply, "deadline": self.deadline, "ts": self.ts, "route": self.route}
        return orjson.dumps(doc).decode()

    @classmethod
    def of(cls, address: ReplyAddress, route: str = "") -> Registration:
        """The registration of the request at ``address``, routed to ``route``."""
        return cls(
            reply=address.reply,
            deadline=address.deadline,
            ts=address.ts if address.ts is not None else address.deadline,
            route=route or "-",
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Registration | None:
        """A stored registration; None when it is not one (written by something else)."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict):
            return None
        reply, deadline, ts = doc.get("reply"), doc.get("deadline"), doc.get("ts")
        if not isinstance(reply, str) or not is_epoch(deadline):
            return None
        ts = float(ts) if is_epoch(ts) else float(deadline)
        return cls(reply, float(deadline), ts, str(doc.get("route") or "-"))
