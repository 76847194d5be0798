"""Redis clients from URLs, the transient-error policy, and Lua script loading.

URLs: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path.sock``, and
``redis+cluster://host:port`` / ``rediss+cluster://`` for a Redis Cluster (or any URL with
``cluster=True``); ``with_password`` and ``without_password`` put a password in and take it out,
for passwords kept apart from their URL (in a secret store).

Losing Redis is normal weather: ``translated`` turns redis-py's errors that go away by themselves
into ``TransientError``, which ``mpush.retry`` waits out; nothing here loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis.exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from mpush.errors import ConfigError, TransientError

_INCLUDE = re.compile(r"^--!include (\w+)$", re.MULTILINE)

__all__ = [
    "AnyRedis",
    "RedisTarget",
    "connect",
    "describe_client",
    "describe_url",
    "is_transient",
    "load_lua",
    "parse_redis_url",
    "reply_text",
    "translated",
    "with_password",
    "without_password",
]

AnyRedis: TypeAlias = "Redis | RedisCluster"

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = {"redis", "rediss", "unix", *_CLUSTER_SCHEMES}

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.ClusterError,
    rex.TryAgainError,
    rex.MasterDownError,
    rex.ReadOnlyError,
    OSError,
    asyncio.TimeoutError,
)


# Error replies that mean "not now" rather than "never": out of memory under noeviction, a busy
# script, too few replicas, a failover or resharding in progress.
_NOT_NOW_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


def is_transient(exc: BaseException) -> bool:
    """True for failures that go away by themselves: lost connections, failovers, loading, and
    error replies that mean "not now" (OOM, BUSY, …)."""
    if isinstance(exc, (TransientError, *TRANSIENT_ERRORS)) or _torn_down_under_us(exc):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(_NOT_NOW_REPLIES)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise ``TransientError`` (from the original) for what ``is_transient`` accepts."""
    try:
        yield
    except TransientError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(str(exc)) from exc
        raise


def _torn_down_under_us(exc: BaseException) -> bool:
    """A lost connection that redis-py's asyncio client reports as AttributeError, TypeError or,
    under uvloop, RuntimeError ("the handler is closed").

    When a connection is closed while another task is using it (the Cluster client drops a failed
    node's connections while a second loop is reconnecting through them), the write can hit a
    writer or transport that is already gone (redis/redis-py#4287, #3546). Only errors raised
    inside the redis, asyncio or uvloop I/O code count: the same types from anywhere else are bugs.
    """
    if not isinstance(exc, AttributeError | TypeError | RuntimeError):
        return False
    frame, tb = None, exc.__traceback__
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    where = frame.f_code.co_filename.replace("\\", "/") if frame is not None else ""
    # redis/asyncio/connection.py, asyncio/selector_events.py, uvloop/handles/handle.pyx, …
    return "/asyncio/" in where or where.startswith("uvloop/") or "/uvloop/" in where


@dataclass(frozen=True)
class RedisTarget:
    url: str
    cluster: bool


def parse_redis_url(url: str, *, cluster: bool = False, key: str = "redis") -> RedisTarget:
    """Validate ``url``; a ``+cluster`` scheme (or ``cluster=True``) selects Redis Cluster."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            key,
            f"unsupported URL scheme {parts.scheme!r} in {describe_url(url)!r} "
            "(use redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://)",
        )
    if parts.scheme in _CLUSTER_SCHEMES:
        url = urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES[parts.scheme]))
        cluster = True
    if cluster and parts.scheme == "unix":
        raise ConfigError(key, "a Redis Cluster cannot be reached through a unix socket URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(key, f"no host in {describe_url(url)!r}")
    return RedisTarget(url=url, cluster=cluster)


def describe_client(client: AnyRedis) -> str:
    """What logs and outage records call the Redis ``client`` talks to: ``redis 10.0.0.5:6379/0``,
    ``redis /run/redis.sock/0``, ``redis cluster 10.0.0.5:7000``."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        where = f"{node.host}:{node.port}" if node is not None else "?"
        return f"redis cluster {where}"
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"redis {where}/{kwargs.get('db', 0)}"


def describe_url(url: str) -> str:
    """The URL with any password masked, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded, so any character is safe) as its password; its
    user, if any, is kept. ConfigError-free: the caller checks ``url`` has none already."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    netloc = f"{user}:" + quote(password, safe="") + f"@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password — in the user part or a ``password=`` query argument — and
    that password, decoded (None when it has none)."""
    parts = urlsplit(url)
    password = None if parts.password is None else unquote(parts.password)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name != "password"]
    if len(kept) != len(query):
        password = password or next(value for name, value in query if name == "password")
    stripped = parts._replace(netloc=netloc, query=urlencode(kept) if kept else "")
    return urlunsplit(stripped), password


def connect(
    target: RedisTarget,
    *,
    socket_timeout: float | None = 10.0,
    connect_timeout: float = 5.0,
    client_name: str | None = None,
) -> AnyRedis:
    """A client for ``target``. Creating it does no I/O; errors surface on first use."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "client_name": client_name,
    }
    if target.cluster:
        return RedisCluster.from_url(target.url, **common)
    # Our own loops retry with backoff and log; a hidden inner retry would only delay that.
    return Redis.from_url(target.url, retry=Retry(NoBackoff(), 0), **common)


def load_lua(name: str) -> str:
    """The source of ``lua/<name>.lua`` shipped in the package, with its includes expanded.

    A line ``--!include other`` is replaced by the source of ``lua/other.lua``: Redis runs each
    script on its own, so what several scripts share (the xid rules) is pasted into each.
    """
    source = resources.files("mpush").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: load_lua(match.group(1)), source)


def reply_text(raw: object) -> str:
    """A Redis reply as text, whether the client decodes replies or not (bytes as UTF-8, what
    does not decode replaced)."""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
