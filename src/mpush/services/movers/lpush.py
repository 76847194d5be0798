"""lpush: a pipe stage. Every message of the input list moves to one output list, atomically,
optionally trimming the output to a capacity and setting its expiry. See docs/lpush.md.
"""

from __future__ import annotations

from mpush.config import LpushSettings
from mpush.services.movers.engine import MoverService

__all__ = ["create"]


def create(settings: LpushSettings) -> MoverService:
    return MoverService("lpush", settings)
