"""Test helpers: waiting on conditions with deadlines, and services run as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_WAIT = 20.0


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = DEFAULT_WAIT,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``message`` at the end."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)


class ServiceProcess:
    """``python -m mpush <args>`` as a real child process, its output in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = list(args)
        self.log_path = log_path
        self._log = log_path.open("ab")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mpush", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = DEFAULT_WAIT) -> None:
        def seen() -> bool:
            if text in self.log():
                return True
            if not self.alive:
                raise AssertionError(
                    f"process exited ({self.process.returncode}) before logging "
                    f"{text!r}:\n{self.log()}"
                )
            return False

        wait_until(seen, timeout=timeout, message=lambda: f"{text!r} in log:\n{self.log()}")

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = DEFAULT_WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process still running after {timeout}s:\n{self.log()}") from None

    def close(self) -> None:
        if self.alive:
            self.kill9()
        self._log.close()


class Spawner:
    """Starts services for one test and kills whatever is left at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServiceProcess] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
        log_path = self.directory / f"service-{len(self.started)}.log"
        proc = ServiceProcess(args, log_path, env)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.close()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run ``python -m mpush`` to completion; return the CompletedProcess (text output)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mpush", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@contextlib.contextmanager
def stopped(server: Any) -> Iterator[None]:
    """Stop a RedisServer for the duration of the block, then start it again."""
    server.stop()
    try:
        yield
    finally:
        server.start()
