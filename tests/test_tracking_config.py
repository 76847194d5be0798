"""Tracking settings: defaults, the original prop names, and one clear line for bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpush.config import MonitorSettings, MpushSettings, load_settings
from mpush.errors import ConfigError
from tests.helpers import run_cli

BASE = {"input": "{a}:in", "out": ["{a}:out"]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MPUSH_"):
            monkeypatch.delenv(name)


def test_defaults_and_when_tracking_is_on() -> None:
    settings = load_settings(MpushSettings, BASE)
    assert (settings.message_timeout, settings.message_expire) == (10.0, 3600)
    assert (settings.message_capacity, settings.max_deliveries) == (100_000, 0)
    assert not settings.tracking, "no namespace, no tracking"
    tracked = load_settings(MpushSettings, {**BASE, "service_namespace": "{a}:mpush"})
    assert tracked.tracking
    off = load_settings(
        MpushSettings, {**BASE, "service_namespace": "{a}:mpush", "message_tracking": False}
    )
    assert not off.tracking


def test_original_camel_case_props(tmp_path: Path) -> None:
    props = {
        "in": "{a}:in",
        "out": ["{a}:out"],
        "serviceNamespace": "{a}:mpush",
        "messageExpire": 600,
        "messageTimeout": 5,
        "messageCapacity": 500,
        "maxDeliveries": 3,
        "retryBackoff": 0.5,
    }
    config = tmp_path / "props.json"
    config.write_text(json.dumps(props))
    settings = load_settings(MpushSettings, {"config": config})
    assert (settings.message_expire, settings.message_timeout) == (600, 5.0)
    assert (settings.message_capacity, settings.max_deliveries) == (500, 3)
    assert settings.retry_backoff == 0.5


@pytest.mark.parametrize(
    ("flags", "key", "text"),
    [
        ({"message_timeout": 20, "message_expire": 10}, "message_expire", "longer than"),
        ({"max_deliveries": 5, "message_expire": 100}, "message_expire", "outlast every delivery"),
        ({"message_capacity": 0}, "message_capacity", "greater than or equal to 1"),
        ({"max_deliveries": -1}, "max_deliveries", "greater than or equal to 0"),
    ],
)
def test_bad_values_name_the_key(flags: dict[str, object], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, {**BASE, **flags})
    assert caught.value.key == key
    assert text in caught.value.problem


def test_monitor_needs_a_namespace() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(MonitorSettings, {})
    assert caught.value.key == "service_namespace"
    result = run_cli("monitor", "--redis", "redis://127.0.0.1:1")
    assert result.returncode == 2
    assert "service_namespace" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_flag_exits_2_naming_the_key() -> None:
    result = run_cli("mpush", "--in", "{a}:in", "--out", "{a}:out", "--message-timeout", "-1")
    assert result.returncode == 2
    assert "message_timeout" in result.stderr
