"""Settings: load order, original prop names, and one clear line for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpush.config import LpushSettings, MpushSettings, load_settings
from mpush.errors import ConfigError
from tests.helpers import run_cli

BASE = {"input": "a:in", "out": ["a:out"]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MPUSH_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings(MpushSettings, BASE)
    assert settings.pop_timeout == 1.0
    assert settings.service_expire == 60
    assert settings.batch == 1000
    assert settings.service_namespace is None


def test_load_order_file_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mpush.toml"
    config.write_text(
        'in = "file:in"\nout = ["file:out"]\npop_timeout = 2.0\nbatch = 10\nservice_expire = 90\n'
    )
    monkeypatch.setenv("MPUSH_POP_TIMEOUT", "3.0")
    monkeypatch.setenv("MPUSH_BATCH", "20")
    settings = load_settings(MpushSettings, {"config": config, "batch": 30})
    assert settings.input == "file:in"  # only the file sets it
    assert settings.service_expire == 90  # file over default
    assert settings.pop_timeout == 3.0  # env over file
    assert settings.batch == 30  # flag over env


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "props.json"
    config.write_text(json.dumps({"in": "x:in", "out": "x:out"}))
    monkeypatch.setenv("MPUSH_CONFIG", str(config))
    settings = load_settings(MpushSettings, {})
    assert (settings.input, settings.out) == ("x:in", ["x:out"])


def test_original_props_file_works(tmp_path: Path) -> None:
    """A props file of the original project, written as JSON, with its camelCase names."""
    props = {
        "redis": "redis://localhost:6379",
        "redisNamespace": "demo:mpush",
        "popTimeout": 60,
        "in": "demo:mpush:in",
        "pending": "demo:mpush:pending",
        "out": ["demo:mpush:out1", "demo:mpush:out2"],
        "serviceExpire": 120,
        "serviceRenew": 30,
        "serviceCapacity": 10,
    }
    config = tmp_path / "props.json"
    config.write_text(json.dumps(props))
    settings = load_settings(MpushSettings, {"config": config})
    assert settings.service_namespace == "demo:mpush"
    assert settings.pop_timeout == 60
    assert settings.out == ["demo:mpush:out1", "demo:mpush:out2"]
    assert (settings.service_expire, settings.service_renew, settings.service_capacity) == (
        120,
        30,
        10,
    )


def test_environment_lists_comma_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPUSH_OUT", "q:a, q:b")
    assert load_settings(MpushSettings, {"input": "q:in"}).out == ["q:a", "q:b"]
    monkeypatch.setenv("MPUSH_OUT", '["q:c", "q:d"]')
    assert load_settings(MpushSettings, {"input": "q:in"}).out == ["q:c", "q:d"]


@pytest.mark.parametrize(
    ("flags", "key", "words"),
    [
        ({"pop_timeout": "soon"}, "pop_timeout", "valid number"),
        ({"pop_timeout": -1}, "pop_timeout", "greater than 0"),
        ({"batch": 100_000}, "batch", "less than or equal to 5000"),
        ({"service_renew": 90, "service_expire": 60}, "service_renew", "shorter than"),
        ({"out": ["a:in"]}, "out", "also the input"),
        ({"out": ["a:o", "a:o"]}, "out", "named twice"),
        ({"log_format": "xml"}, "log_format", "'human' or 'json'"),
    ],
)
def test_bad_values_name_the_key(flags: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, {**BASE, **flags})
    assert caught.value.key == key
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_required_setting_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, {"out": ["a:out"]})
    assert caught.value.key == "input"
    assert "--in" in str(caught.value)
    assert "MPUSH_INPUT" in str(caught.value)


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**BASE, "popTimeoutt": 5}))
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, {"config": config})
    assert caught.value.key == "popTimeoutt"
    assert "unknown setting" in str(caught.value)


def test_unknown_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPUSH_POP_TIMEOT", "1")
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, BASE)
    assert caught.value.key == "MPUSH_POP_TIMEOT"


@pytest.mark.parametrize(
    ("content", "suffix", "words"),
    [
        ("not = [valid", ".toml", "not valid TOML"),
        ("{nope", ".json", "not valid JSON"),
        ("[1, 2]", ".json", "must hold"),
    ],
)
def test_unreadable_config_file(tmp_path: Path, content: str, suffix: str, words: str) -> None:
    config = tmp_path / f"c{suffix}"
    config.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings(MpushSettings, {"config": config})
    assert caught.value.key == "config"
    assert words in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(MpushSettings, {"config": tmp_path / "absent.toml"})


def test_lpush_takes_exactly_one_out() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(LpushSettings, {"input": "a", "out": ["b", "c"]})
    assert caught.value.key == "out"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--in", "a", "--out", "b", "--pop-timeout", "-3"], "config: pop_timeout:"),
        (["--in", "a", "--out", "b", "--redis", "http://x"], "unsupported URL scheme"),
        (["--out", "b"], "config: input: required"),
    ],
)
def test_cli_bad_config_one_line_exit_2(args: list[str], words: str) -> None:
    result = run_cli("mpush", *args, "--startup-timeout", "0")
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_unreachable_redis_exit_69_without_traceback() -> None:
    from mpush.orchestration.redisserver import free_port

    port = free_port()  # nothing listens there
    result = run_cli(
        "mpush",
        "--in",
        "a",
        "--out",
        "b",
        "--redis",
        f"redis://127.0.0.1:{port}",
        "--startup-timeout",
        "0.5",
    )
    assert result.returncode == 69, result.stderr
    assert "not reachable" in result.stderr
    assert "Traceback" not in result.stderr
