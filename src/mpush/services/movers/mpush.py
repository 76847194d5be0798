"""mpush: fan-out. Every message of the input list goes to every output list, atomically.

Persistent pub/sub over lists: each subscriber pops its own output list, and a subscriber that is
offline finds its messages waiting when it comes back. See docs/mpush.md.
"""

from __future__ import annotations

from mpush.config import MpushSettings
from mpush.services.movers.engine import MoverService

__all__ = ["create"]


def create(settings: MpushSettings) -> MoverService:
    return MoverService("mpush", settings)
