"""`mpush demo` runs end to end with its own private redis-server and stops cleanly."""

from __future__ import annotations

from tests.helpers import run_cli


def test_demo_fans_out_three_messages() -> None:
    result = run_cli("demo", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "redis-cli lrange demo:mpush:out0" in out
    assert "redis-cli lrange demo:mpush:out1" in out
    assert out.count('"one"') == 2
    assert out.count('"three"') == 2
    assert "services in demo:mpush" in out
    assert "mpush stopped with exit code 0" in out
    assert "stopped the private redis-server" in out
