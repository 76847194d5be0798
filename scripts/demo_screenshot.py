"""Make docs/demo.png: the page of `mpush demo` under load, in headless Debian chromium.

    .venv/bin/python scripts/demo_screenshot.py [docs/demo.png]

Starts `mpush demo --port 0`, opens its page, presses "50 / s", scales `work` up with the page's
+ button (unless rcontrol autoscales it), kills host-b's agent with SIGKILL, waits for its
instances to be placed on host-a, and saves the whole page. About two minutes. Needs chromium,
chromium-driver and selenium (`make test` installs them).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1400


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


@contextlib.contextmanager
def demo(log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mpush", "demo", "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        text = until(lambda: re.search(r"serving (http://\S+)", log.read_text()), 120, "the demo")
        yield text.group(1), process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def chromium(profile: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={WIDTH},1200", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "demo.png").resolve()
    with tempfile.TemporaryDirectory() as tmp, demo(Path(tmp) / "demo.log") as (url, _):
        browser = chromium(Path(tmp) / "profile")
        try:
            browser.get(url)
            script = browser.execute_script
            until(lambda: script("return +(document.body.dataset.refreshed || 0) > 2"), 30, "data")
            time.sleep(8)
            browser.find_element("css selector", "#load-buttons button[data-rate='50']").click()
            time.sleep(6)
            if script("return document.body.dataset.mode") == "manual":
                for _ in range(2):
                    plus = "#scalable tr[data-deployment=work] button.plus"
                    browser.find_element("css selector", plus).click()
                    time.sleep(5)
            time.sleep(15)
            banner = (Path(tmp) / "demo.log").read_text()
            pid = re.search(r"^  host-b +pid (\d+)", banner, re.M)
            assert pid is not None, banner
            os.kill(int(pid.group(1)), signal.SIGKILL)
            until(
                lambda: script(
                    "const view = window.demo.status.rcontrol;"
                    "return !view.hosts.find(h => h.name === 'host-b').alive"
                    " && view.deployments.every(d => d.ready === d.desired)"
                ),
                40,
                "the instances of host-b placed on host-a",
            )
            time.sleep(12)
            height = script("return document.documentElement.scrollHeight")
            browser.set_window_size(WIDTH, height + 40)
            time.sleep(2)
            browser.save_screenshot(str(target))
        finally:
            browser.quit()
    print(f"saved {target}")


if __name__ == "__main__":
    main()
