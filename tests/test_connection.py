"""Redis URLs a service accepts, each against a real redis-server set up for it: a unix socket, an
ACL user with a password, and TLS. Connection modes are a property of a single server, so these run
on standalone only; Cluster URLs are covered by every `redis_env` test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mpush.connection import with_password, without_password
from mpush.orchestration.redisserver import RedisServer
from tests.helpers import Spawner, run_cli, wait_until


def moves_three(spawn: Spawner, url: str, client: redis.Redis, *extra: str) -> None:
    proc = spawn(
        "lpush",
        "--redis",
        url,
        "--in",
        "c:in",
        "--out",
        "c:out",
        "--pop-timeout",
        "0.3",
        "--service-namespace",
        "c:svc",
        *extra,
    )
    proc.wait_for_log("lpush started")
    client.lpush("c:in", "a", "b", "c")
    wait_until(lambda: client.llen("c:out") == 3)
    assert client.lrange("c:out", 0, -1) == ["c", "b", "a"]
    assert client.exists("c:svc:service:1")


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis"


def _started(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    yield server
    server.stop()


def test_unix_socket(server_dir: Path, spawn: Spawner) -> None:
    sock = server_dir / "redis.sock"
    for server in _started(
        RedisServer(server_dir, extra=("--unixsocket", str(sock), "--unixsocketperm", "700"))
    ):
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        moves_three(spawn, f"unix://{sock}?db=0", client)
        client.close()
        assert server.running


def test_acl_user_and_password(server_dir: Path, spawn: Spawner) -> None:
    acl = ("--user", "default", "off", "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all")
    for server in _started(RedisServer(server_dir, extra=acl)):
        client = redis.Redis(
            port=server.port, username="alice", password="s3cret", decode_responses=True
        )
        moves_three(spawn, f"redis://alice:s3cret@127.0.0.1:{server.port}/0", client)
        client.close()
        bad = run_cli(
            "lpush",
            "--redis",
            f"redis://alice:wrong@127.0.0.1:{server.port}/0",
            "--in",
            "c:in",
            "--out",
            "c:out",
            "--startup-timeout",
            "1",
        )
        assert bad.returncode == 69
        assert "authentication failed" in bad.stderr or "not reachable" in bad.stderr
        assert "s3cret" not in bad.stderr
        assert "wrong" not in bad.stderr.replace("***", "")


def test_a_password_kept_apart_from_the_url(server_dir: Path, spawn: Spawner) -> None:
    """MPUSH_REDIS_PASSWORD (what a Kubernetes Secret feeds): any character, a password-less URL,
    and the password in no log line; one in the URL as well is a config error."""
    password = "p@ss/w:rd#1 %x?"
    acl = ("--user", "default", "off", "--user", "alice", "on", f">{password}", "~*", "&*")
    server = RedisServer(server_dir, extra=(*acl, "+@all")).start()
    client = redis.Redis(
        port=server.port, username="alice", password=password, decode_responses=True
    )
    try:
        url = f"redis://alice@127.0.0.1:{server.port}/0"
        env = {"MPUSH_REDIS_PASSWORD": password}
        proc = spawn(
            "lpush", "--redis", url, "--in", "c:in", "--out", "c:out", "--pop-timeout", "0.3",
            "--service-namespace", "c:svc", env=env,
        )  # fmt: skip
        proc.wait_for_log("lpush started")
        client.lpush("c:in", "a", "b")
        wait_until(lambda: client.llen("c:out") == 2)
        assert password not in proc.log()
        both = run_cli(
            "lpush", "--redis", f"redis://alice:x@127.0.0.1:{server.port}/0", "--in", "c:in",
            "--out", "c:out", env=env,
        )  # fmt: skip
        assert both.returncode == 2, both.stderr
        assert "redis_password: the redis URL has a password already" in both.stderr
        assert password not in both.stderr
    finally:
        client.close()
        server.stop()


def test_passwords_in_and_out_of_urls() -> None:
    password = "p@ss/w:rd#1 %x?"
    url = with_password("redis://alice@host:6380/2", password)
    assert redis.connection.parse_url(url)["password"] == password
    assert redis.connection.parse_url(url)["username"] == "alice"
    assert without_password(url) == ("redis://alice@host:6380/2", password)
    assert without_password("rediss://:pw@host/0") == ("rediss://host/0", "pw")
    assert without_password("redis://host/0?password=pw&db=1") == ("redis://host/0?db=1", "pw")
    assert without_password("redis+cluster://h:7000") == ("redis+cluster://h:7000", None)
    assert with_password("unix:///run/redis.sock?db=0", "pw") == "unix://:pw@/run/redis.sock?db=0"


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "redis.key", "redis.csr", "redis.crt")
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mpush-test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return ca, cert, key


def test_tls(server_dir: Path, tmp_path: Path, spawn: Spawner) -> None:
    ca, cert, key = _make_certs(tmp_path / "certs")
    from mpush.orchestration.redisserver import free_port

    tls_port = free_port()
    plain = free_port()
    extra = (
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
    )
    for _server in _started(RedisServer(server_dir, port=plain, extra=extra)):
        client = redis.Redis(
            host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(ca), decode_responses=True
        )
        moves_three(spawn, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}", client)
        client.close()


def test_json_log_format(spawn: Spawner, standalone: RedisServer) -> None:
    standalone.start()
    proc = spawn(
        "lpush",
        "--redis",
        standalone.url,
        "--in",
        "j:in",
        "--out",
        "j:out",
        "--service-namespace",
        "j:svc",
        "--log-format",
        "json",
        "--pop-timeout",
        "0.3",
    )
    proc.wait_for_log("lpush started")
    proc.signal(15)
    assert proc.wait() == 0
    lines = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert {"ts", "level", "service", "pid", "host", "msg"} <= set(lines[0])
    assert any(line["msg"].startswith("registered as j:svc:service:") for line in lines)
    assert lines[-1]["msg"].startswith("lpush stopped")
    assert all(line["service"] == "lpush" for line in lines)
