"""Run a deploy step as a child process: an argument list (never a shell), a time limit, a kill.

Each child starts in its own session (no controlling terminal, so git or ssh can never stop to
prompt for a password) and its own process group, which is killed as a whole on timeout or
cancellation — a build backend that pip started goes with it. On Linux the child also gets
SIGKILL if ndeploy itself dies (``PR_SET_PDEATHSIG``). That reaches only the direct child: pip's
own children outlive a kill -9 of ndeploy, so before a deploy dir left by a dead attempt is reused,
``kill_stragglers`` kills every process whose command line names a file in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["StepError", "kill_stragglers", "run_step"]

_TAIL_LINES = 8
_TAIL_CHARS = 1000
_PR_SET_PDEATHSIG = 1


class StepError(Exception):
    """A deploy step failed; ``step`` names it (clone, checkout, venv, install, …)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def _die_with_parent_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return hook


_DIE_WITH_PARENT = _die_with_parent_hook()


async def run_step(
    step: str,
    argv: Sequence[str],
    *,
    limit: float,
    cwd: Path | None = None,
    what: str | None = None,
) -> str:
    """Run ``argv``; return its output (stdout and stderr). StepError on failure or timeout.

    ``what`` names the program in errors (default: the name of ``argv[0]``).
    """
    what = what or Path(argv[0]).name
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_DIE_WITH_PARENT,
        )
    except OSError as exc:
        raise StepError(step, f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        async with asyncio.timeout(limit):
            raw, _ = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        raise StepError(step, f"timed out after {limit:g}s") from None
    except BaseException:
        await _kill(proc)  # cancelled: the step must not outlive the deploy
        raise
    output = raw.decode(errors="replace")
    if proc.returncode != 0:
        raise StepError(step, f"{what} exited with {proc.returncode}: {tail(output)}")
    return output


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5.0)


def kill_stragglers(path: Path, *, rounds: int = 5) -> int:
    """SIGKILL the processes (that we may signal) whose arguments name ``path`` or a file in it.

    Reads ``/proc`` (Linux); elsewhere it does nothing. Scans again after killing, up to
    ``rounds`` times, in case a straggler started a child meanwhile. Returns how many were killed.
    """
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return 0
    needle = str(path).encode()
    killed = 0
    for _ in range(rounds):
        found = [pid for pid in _pids(proc_root) if _names(proc_root / str(pid), needle)]
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        if not found:
            break
    return killed


def _pids(proc_root: Path) -> list[int]:
    me = os.getpid()
    return [int(e.name) for e in proc_root.iterdir() if e.name.isdecimal() and int(e.name) != me]


def _names(entry: Path, needle: bytes) -> bool:
    try:
        args = (entry / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg == needle or arg.startswith(needle + b"/") for arg in args)


def tail(output: str, lines: int = _TAIL_LINES) -> str:
    """The last non-blank lines of ``output``, joined with ' | ' to stay on one line."""
    kept = [line.strip() for line in output.splitlines() if line.strip()][-lines:]
    text = " | ".join(kept) if kept else "(no output)"
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]
