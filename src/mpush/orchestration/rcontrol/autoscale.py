"""Autoscaling: the replicas a deployment's queue and response times ask for, stabilized.

Recommendations (docs/autoscale.md), each clamped to ``min … max``:

- **queue** (KEDA's redis lists scaler): ``ceil(length / target)``; a length at or below
  ``activation`` asks for ``min``.
- **response time** (HPA's formula): the p95 of the response metric's histogram over the last
  ``window`` seconds (the difference of two readings of the hash, ``status.histogram``) against
  ``response_time``: ``ceil(replicas × p95 / response_time)``, unchanged within 10 % of the
  target (HPA's tolerance). Measured only over time after the replicas last changed (what came
  before says nothing of the new count), so it speaks once a whole window has passed since; a
  window without a single observation asks for ``min``.

The deployment's recommendation is the larger of the two (as HPA does with several metrics).
Stabilization (HPA's behaviour): scale up to the *lowest* recommendation of the last
``scale_up_window`` seconds, down to the *highest* of the last ``scale_down_window`` seconds —
up fast, down only once the lower figure has held for the whole window. A controller that just
began watching counts the current replicas as a recommendation, so it never scales down before a
window has passed.

``Autoscaler`` keeps the readings and recommendations in memory (monotonic time): a controller
that takes over starts afresh.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from mpush.orchestration.rcontrol.spec import Autoscale
from mpush.status.histogram import delta, quantile

__all__ = ["Autoscaler", "Reading", "Scaling"]

_TOLERANCE = 0.1
_KEEP = 3600.0  # seconds of readings and recommendations kept at most


@dataclass(frozen=True)
class Reading:
    """What was read for one deployment at ``at`` (monotonic seconds)."""

    at: float
    queue: int | None = None  # the length of its queue
    latency: Mapping[str, float] | None = None  # the fields of its response metric's hash


@dataclass(frozen=True)
class Scaling:
    """A decision: set the replicas to ``replicas``, for the reasons in ``why``."""

    replicas: int
    why: str


@dataclass
class _Track:
    readings: deque[Reading] = field(default_factory=deque)
    recommended: deque[tuple[float, int]] = field(default_factory=deque)
    replicas: int = -1  # as last seen
    changed: float = 0.0  # when the replicas last changed (or watching began)
    figures: str = ""  # what the latest recommendation came from
    config: Autoscale | None = None


class Autoscaler:
    """Recommendations per deployment, from the readings the controller feeds it."""

    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}

    def forget(self, keep: set[str]) -> None:
        """Drop what is kept about deployments not in ``keep``."""
        self._tracks = {name: t for name, t in self._tracks.items() if name in keep}

    def observe(
        self, name: str, config: Autoscale, replicas: int, reading: Reading, *, metric: str = ""
    ) -> None:
        """Record ``reading`` and the recommendation it makes with ``replicas`` running now."""
        now = reading.at
        track = self._tracks.get(name)
        if track is None or track.config != config:
            track = self._tracks[name] = _Track(config=config, changed=now)
            track.recommended.append((now, replicas))  # no scale-down before a window passes
        if replicas != track.replicas:
            track.replicas, track.changed = replicas, now
        track.readings.append(reading)
        horizon = now - max(config.window, config.scale_down_window, config.scale_up_window) - 1
        while len(track.readings) > 2 and track.readings[1].at <= max(horizon, now - _KEEP):
            track.readings.popleft()
        wanted, track.figures = self._recommend(config, track, replicas, reading, metric)
        track.recommended.append((now, wanted))
        while track.recommended and track.recommended[0][0] < max(horizon, now - _KEEP):
            track.recommended.popleft()

    def decide(self, name: str, replicas: int, now: float) -> Scaling | None:
        """The replicas to set now, if they differ from ``replicas``."""
        track = self._tracks.get(name)
        if track is None or track.config is None or not track.recommended:
            return None
        config = track.config
        ups = [n for at, n in track.recommended if at >= now - config.scale_up_window]
        downs = [n for at, n in track.recommended if at >= now - config.scale_down_window]
        up = min(ups or [track.recommended[-1][1]])
        down = max(downs or [track.recommended[-1][1]])
        if replicas < up:
            held = (
                f" (the lowest of the last {config.scale_up_window:g}s)"
                if config.scale_up_window
                else ""
            )
            return Scaling(up, f"replicas {replicas} -> {up}{held}: {track.figures}")
        if replicas > down:
            held = f"the highest of the last {config.scale_down_window:g}s"
            return Scaling(down, f"replicas {replicas} -> {down} ({held}): {track.figures}")
        return None

    def _recommend(
        self, config: Autoscale, track: _Track, replicas: int, reading: Reading, metric: str
    ) -> tuple[int, str]:
        wanted: list[int] = []
        figures: list[str] = []
        if config.queue is not None and reading.queue is not None:
            length = reading.queue
            asked = 0 if length <= config.activation else math.ceil(length / config.target)
            wanted.append(asked)
            figures.append(
                f"queue {config.queue} {length} / target {config.target:g} -> {asked}"
                + (f" (activation {config.activation:g})" if length <= config.activation else "")
            )
        if config.response_time is not None:
            asked_rt, said = self._by_response_time(config, track, replicas, reading, metric)
            if asked_rt is not None:
                wanted.append(asked_rt)
            figures.append(said)
        if not wanted:
            wanted.append(replicas)
        best = max(wanted)
        clamped = min(max(best, config.min), config.max)
        if clamped != best:
            figures.append(f"within {config.min}..{config.max} -> {clamped}")
        return clamped, "; ".join(figures)

    @staticmethod
    def _by_response_time(
        config: Autoscale, track: _Track, replicas: int, reading: Reading, metric: str
    ) -> tuple[int | None, str]:
        assert config.response_time is not None
        target = config.response_time
        since = max(reading.at - config.window, track.changed)
        if reading.at - track.changed < config.window or reading.latency is None:
            left = config.window - (reading.at - track.changed)
            return None, f"p95 of {metric}: waiting {max(left, 0):.1f}s for a whole window"
        first = next((r for r in track.readings if r.at >= since and r.latency is not None), None)
        if first is None or first is reading or first.latency is None:
            return None, f"p95 of {metric}: no earlier reading in the window"
        window = delta(reading.latency, first.latency)
        span = reading.at - first.at
        if window.get("count", 0.0) <= 0:
            return config.min, f"p95 of {metric}: nothing answered in {span:.0f}s -> {config.min}"
        p95 = quantile(window, 0.95)
        if p95 is None:
            return None, f"p95 of {metric}: no histogram (histo_scale) in its hash"
        ratio = p95 / target
        within = abs(ratio - 1) <= _TOLERANCE
        asked = replicas if within else math.ceil(max(replicas, 1) * ratio)
        return asked, (
            f"p95 {p95:.3f}s of {metric} over {span:.0f}s / target {target:g}s -> {asked}"
        )
