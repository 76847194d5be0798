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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mpush.epoch import is_epoch

__all__ = ["Registration", "registration_key"]

LINGER = 10.0  # seconds a registration outlives its deadline at least


def registration_key(prefix: str, request_id: str) -> str:
    return f"{prefix}:{request_id}"


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
    def from_doc(cls, doc: Mapping[str, Any], route: str = "") -> Registration | None:
        """From a request (or registration) document; None without a usable reply/deadline."""
        reply, deadline = doc.get("reply"), doc.get("deadline")
        if not isinstance(reply, str) or not is_epoch(deadline):
            return None
        ts = doc.get("ts")
        return cls(
            reply=reply,
            deadline=float(deadline),
            ts=float(ts) if is_epoch(ts) else float(deadline),
            route=str(doc.get("route") or route or "-"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Registration | None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return cls.from_doc(doc) if isinstance(doc, dict) else None
