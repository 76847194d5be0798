"""Quantiles in seconds from a metrics hash's histogram, over a window (the difference of two
readings), not over the hash's whole life.

A metrics hash (docs/lifecycle.md) counts values in eleven buckets of its scale T (the
observations' timeout, in ``histo_scale``): ``histoK`` holds ``[K/100·T, (K+10)/100·T)`` for K in
0, 10, … 90, and ``histo100`` the values ≥ T. ``quantile`` finds the bucket holding the q-th value
and interpolates linearly inside it. The buckets are T/10 wide — a second for a 10 s timeout — so
inside the lowest one, where a fast service keeps nearly everything, a uniform spread would put
the p95 near T/10 whatever the real times. There the window's mean (from ``sum``) is used: the
lowest bucket's values are taken to spread evenly from 0 to twice their mean (what remains of
``sum`` once the other buckets are counted at their middles). A quantile in ``histo100`` is T
(the answer is "at least T").
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BUCKETS", "SCALE", "delta", "quantile"]

BUCKETS = tuple(f"histo{k}" for k in range(0, 101, 10))
SCALE = "histo_scale"
_ADDED = ("count", "sum", *BUCKETS)


def delta(now: Mapping[str, float], before: Mapping[str, float] | None) -> dict[str, float]:
    """What was added to a metrics hash between two readings: ``count``, ``sum`` and the
    buckets, with the newer scale. A hash that shrank (deleted and begun again) counts whole."""
    if before is None or now.get("count", 0.0) < before.get("count", 0.0):
        before = {}
    found = {name: max(0.0, now.get(name, 0.0) - before.get(name, 0.0)) for name in _ADDED}
    if SCALE in now:
        found[SCALE] = now[SCALE]
    return found


def quantile(fields: Mapping[str, float], q: float) -> float | None:
    """The ``q`` quantile (0 < q < 1) in seconds of the values counted in ``fields``; None
    without a scale or without values."""
    scale = fields.get(SCALE, 0.0)
    counts = [fields.get(name, 0.0) for name in BUCKETS]
    total = sum(counts)
    if scale <= 0 or total <= 0:
        return None
    rank = q * total
    width = scale / 10
    seen = 0.0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if index == 10:
                return scale
            share = (rank - seen) / count
            if index == 0:
                return share * _lowest_spread(fields, counts, scale)
            return index * width + share * width
        seen += count
    return scale  # rounding: the rank lies past the last count


def _lowest_spread(fields: Mapping[str, float], counts: list[float], scale: float) -> float:
    """How far the lowest bucket's values spread: twice their mean, at most the bucket's width."""
    width = scale / 10
    if "sum" not in fields or counts[0] <= 0:
        return width
    others = sum(count * (index + 0.5) * width for index, count in enumerate(counts[1:10], 1))
    others += counts[10] * scale
    mean = (fields["sum"] - others) / counts[0]
    return min(width, max(0.0, 2 * mean))
