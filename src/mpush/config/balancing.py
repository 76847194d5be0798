"""mbalance's output syntax: ``--out QUEUE[=NAMESPACE]``, ``--weight QUEUE=W``, ``--cap [QUEUE=]N``.

Pure parsing, used by the settings (so mistakes fail at startup, naming the key) and by the
service. Errors are ``ValueError('<key>: <problem>')``, which config turns into ConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["BalanceOutput", "parse_outputs"]

T = TypeVar("T", int, float)


@dataclass(frozen=True)
class BalanceOutput:
    """One output of mbalance."""

    queue: str
    consumers: str | None = None  # the namespace whose registrations make this output live
    weight: float = 1.0
    cap: int = 0  # 0: no cap


def parse_outputs(
    source: str, out: Sequence[str], weight: Sequence[str], cap: Sequence[str]
) -> tuple[BalanceOutput, ...]:
    """The outputs with their consumer namespace, weight and cap, in ``--out`` order."""
    consumers: dict[str, str | None] = {}
    for spec in out:
        queue, sep, namespace = spec.partition("=")
        if "=" in namespace:
            raise ValueError(f"out: {spec!r} has more than one '=' (QUEUE=NAMESPACE)")
        if not queue or (sep and not namespace):
            raise ValueError(f"out: {spec!r} must be QUEUE or QUEUE=NAMESPACE")
        if queue == source:
            raise ValueError(f"out: {queue!r} is also the input list")
        if queue in consumers:
            raise ValueError(f"out: {queue!r} is named twice")
        consumers[queue] = namespace or None
    weights = _per_queue("weight", weight, consumers, _weight)
    caps = _per_queue("cap", cap, consumers, _cap)
    every = caps.pop("", 0)
    return tuple(
        BalanceOutput(queue, ns, weights.get(queue, 1.0), caps.get(queue, every))
        for queue, ns in consumers.items()
    )


def _weight(raw: str) -> float:
    value = float(raw)
    if not 0 < value < math.inf:
        raise ValueError("not a number > 0")
    return value


def _cap(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("not a whole number >= 0")
    return value


def _per_queue(
    key: str, specs: Sequence[str], queues: Mapping[str, object], parse: Callable[[str], T]
) -> dict[str, T]:
    """Parse ``QUEUE=VALUE`` entries (and, for caps, a bare ``VALUE`` filed under '')."""
    values: dict[str, T] = {}
    for spec in specs:
        queue, sep, raw = spec.rpartition("=")
        if not sep and key != "cap":
            raise ValueError(f"{key}: {spec!r} must be QUEUE={key.upper()}")
        if sep and queue not in queues:
            raise ValueError(f"{key}: {queue!r} is not one of the out lists")
        try:
            values[queue] = parse(raw)
        except ValueError:
            kind = "a number > 0" if key == "weight" else "a whole number >= 0"
            raise ValueError(f"{key}: {spec!r}: {key} must be {kind}") from None
    return values
