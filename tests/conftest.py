"""Fixtures: private redis-server processes on free ports, never a Redis somebody else runs.

- ``standalone``, ``second``: RedisServer instances (AOF on), started once per session.
- ``cluster``: a 3-master Redis Cluster made with ``redis-cli --cluster create``.
- ``redis_env``: parametrized over standalone and cluster; flushed before each test. Every service
  test takes it, so each runs on both.
- ``spawn``: starts ``mpush …`` as real child processes and kills leftovers at the test's end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from mpush.orchestration.redisserver import RedisCluster, RedisServer
from tests.helpers import Spawner


@pytest.fixture(scope="session")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-standalone")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-second")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    servers = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield servers
    servers.stop()


@dataclass
class RedisEnv:
    """One Redis deployment as a test sees it."""

    kind: str  # "standalone" or "cluster"
    url: str  # what services are given
    client: Any  # a sync client, decode_responses=True
    servers: list[RedisServer]

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"

    def server_for(self, key: str) -> RedisServer:
        """The server holding ``key`` (the only one, on standalone)."""
        if not self.is_cluster:
            return self.servers[0]
        node = self.client.get_node_from_key(key)
        return next(s for s in self.servers if s.port == node.port)

    def wait_healthy(self) -> None:
        if self.is_cluster:
            RedisCluster(Path("."), nodes=self.servers).wait_ok()


def sync_client(url: str, *, cluster: bool) -> Any:
    if cluster:
        port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
        return redis.RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


@pytest.fixture(params=["standalone", "cluster"])
def redis_env(request: pytest.FixtureRequest) -> Iterator[RedisEnv]:
    if request.param == "standalone":
        server: RedisServer = request.getfixturevalue("standalone")
        server.start()  # a test may have stopped it
        env = RedisEnv("standalone", server.url, sync_client(server.url, cluster=False), [server])
    else:
        servers: RedisCluster = request.getfixturevalue("cluster")
        for node in servers.nodes:
            node.start()
        servers.wait_ok()
        env = RedisEnv(
            "cluster", servers.url, sync_client(servers.url, cluster=True), servers.nodes
        )
    env.client.flushall()
    yield env
    env.client.close()


@pytest.fixture
def standalone_env(standalone: RedisServer) -> Iterator[RedisEnv]:
    """Standalone only: for tests whose subject has no Cluster variant."""
    standalone.start()
    client = sync_client(standalone.url, cluster=False)
    client.flushall()
    yield RedisEnv("standalone", standalone.url, client, [standalone])
    client.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.close()
