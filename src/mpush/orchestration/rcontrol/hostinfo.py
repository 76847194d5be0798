"""What an agent measures about its host and its instances, from /proc (Linux).

- the load average and the free memory (``MemAvailable``) of the host, for its heartbeat, and
  whether they are over the agent's limits (``overload``): such a host takes no new instances;
- each instance's CPU time (``utime + stime`` of ``/proc/<pid>/stat``), turned by ``CpuMeter``
  into the share of one core it used over the last ``window`` seconds. The controller retires the
  idlest instances first when it scales down: an instance that used no CPU lately holds no work.

Elsewhere than Linux the figures are missing (None), never an error.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CpuMeter", "HostFigures", "cpu_seconds", "host_figures", "overload"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


@dataclass(frozen=True)
class HostFigures:
    load1: float | None
    mem_free: int | None  # bytes available without swapping
    mem_total: int | None
    cpus: int | None


def host_figures() -> HostFigures:
    load1: float | None = None
    with contextlib.suppress(OSError, AttributeError):
        load1 = os.getloadavg()[0]
    memory: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in (_PROC / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if name in ("MemAvailable", "MemTotal") and parts and parts[0].isdigit():
                memory[name] = int(parts[0]) * 1024
    return HostFigures(load1, memory.get("MemAvailable"), memory.get("MemTotal"), os.cpu_count())


def overload(figures: HostFigures, *, max_load: float | None, max_memory: float | None) -> str:
    """Why the host is over a limit (the load average per CPU, the percent of memory in use),
    or '' when it is not (or the figures are missing)."""
    found = []
    if max_load is not None and figures.load1 is not None and figures.cpus:
        per_cpu = figures.load1 / figures.cpus
        if per_cpu > max_load:
            found.append(
                f"load {figures.load1:.2f} on {figures.cpus} CPUs ({per_cpu:.2f} per CPU) is over "
                f"{max_load:g}"
            )
    if max_memory is not None and figures.mem_free is not None and figures.mem_total:
        used = 100 * (1 - figures.mem_free / figures.mem_total)
        if used > max_memory:
            found.append(f"{used:.1f}% of memory in use is over {max_memory:g}%")
    return "; ".join(found)


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, or None if it cannot be read."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count after its end.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


@dataclass
class CpuMeter:
    """The CPU share of one process over a sliding window of samples."""

    window: float = 10.0
    _samples: deque[tuple[float, float]] = field(default_factory=deque)
    _pid: int | None = None

    def sample(self, pid: int | None, now: float) -> float:
        """Record a sample of ``pid`` at ``now`` (monotonic); the share of a core lately."""
        if pid != self._pid:
            self._samples.clear()
            self._pid = pid
        used = cpu_seconds(pid) if pid is not None else None
        if used is None:
            return 0.0
        self._samples.append((now, used))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_at, first_used = self._samples[0]
        if now - first_at <= 0:
            return 0.0
        return max(0.0, (used - first_used) / (now - first_at))
