"""The Redis servers of an export, and where their passwords live: in Kubernetes Secrets, never in
the manifests.

A URL with a password (``redis://:pw@redis:6379/0``, or ``?password=``) is split into the URL
without it and a ``SecretRef``: the Secret named for that server by ``--redis-secret``, else a
name made from the server (``mpush-redis`` for the ``--redis`` one). A server named by
``--redis-secret`` gets its Secret even when its URL carries no password (the password lives only
in the cluster). ``--redis-secret`` takes ``SECRET[:KEY]`` for the ``--redis`` server and
``HOST:PORT=SECRET[:KEY]`` for another; the key defaults to ``password``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mpush.connection import parse_redis_url, without_password
from mpush.errors import ConfigError

__all__ = ["Endpoint", "Passwords", "SecretRef"]

_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
MAIN = "mpush-redis"  # the default Secret of the --redis server


@dataclass(frozen=True, order=True)
class SecretRef:
    """A key of a Kubernetes Secret."""

    name: str
    key: str = "password"

    def env_source(self) -> dict[str, object]:
        """An env var's ``valueFrom``."""
        return {"secretKeyRef": {"name": self.name, "key": self.key}}


@dataclass(frozen=True)
class Endpoint:
    """One Redis server as a pod reaches it: its URL without a password, and where the password
    is (None: it needs none)."""

    url: str
    cluster: bool
    secret: SecretRef | None

    @property
    def _parts(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 6379

    @property
    def address(self) -> str:
        host, port = self._parts
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def server(self) -> str:
        """``HOST:PORT``, as ``--redis-secret`` names it."""
        host, port = self._parts
        return f"{host}:{port}"

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme.startswith("rediss")

    @property
    def database(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username or None

    @property
    def loopback(self) -> bool:
        return self._parts[0] in _LOOPBACK


@dataclass
class Passwords:
    """The Secrets of an export's Redis servers, from ``--redis-secret`` and the URLs met."""

    main: str  # the --redis URL's HOST:PORT
    named: dict[str, SecretRef] = field(default_factory=dict)  # HOST:PORT → its Secret
    needed: dict[SecretRef, set[str]] = field(default_factory=dict)  # → the servers it serves

    @classmethod
    def parse(cls, entries: Sequence[str], main_url: str) -> Passwords:
        passwords = cls(_server_of(main_url))
        for entry in entries:
            server, sep, ref = entry.rpartition("=")
            server = server if sep else passwords.main
            name, _, key = ref.partition(":")
            key = key or "password"
            if not _SECRET_NAME.match(name) or not _SECRET_KEY.match(key):
                raise ConfigError(
                    "redis_secrets",
                    f"{entry!r}: give [HOST:PORT=]SECRET[:KEY] (a Secret name: a-z, 0-9, '-', '.')",
                )
            if ":" not in server:
                raise ConfigError("redis_secrets", f"{entry!r}: name the server as HOST:PORT")
            passwords.named[server.lower()] = SecretRef(name, key)
        return passwords

    def endpoint(self, url: str, *, cluster: bool, key: str) -> Endpoint:
        """The server of ``url`` (the setting ``key``) with its password taken out."""
        target = parse_redis_url(url, cluster=cluster, key=key)
        if urlsplit(url).scheme == "unix":
            raise ConfigError(key, "a unix socket URL cannot be reached from a pod")
        bare, password = without_password(url)
        server = _server_of(url)
        secret = self.named.get(server)
        if secret is None and password is not None:
            secret = SecretRef(MAIN if server == self.main else _default_name(server))
        if secret is not None:
            self.needed.setdefault(secret, set()).add(bare)
        return Endpoint(bare, target.cluster, secret)

    def with_password(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint``, whose password was given apart from its URL (a ``*_password`` setting
        in a table): it goes to its server's Secret."""
        if endpoint.secret is not None:
            return endpoint
        server = endpoint.server.lower()
        secret = self.named.get(server) or SecretRef(
            MAIN if server == self.main else _default_name(server)
        )
        self.needed.setdefault(secret, set()).add(endpoint.url)
        return Endpoint(endpoint.url, endpoint.cluster, secret)


def _server_of(url: str) -> str:
    """``host:port`` of ``url``, lower-case, the port 6379 when not given."""
    parts = urlsplit(url)
    host, port = (parts.hostname or "").lower(), parts.port or 6379
    return f"{host}:{port}"


def _default_name(server: str) -> str:
    """``mpush-redis-<host>-<port>``, a valid Secret name."""
    slug = re.sub(r"[^a-z0-9]+", "-", server.lower()).strip("-")
    return f"{MAIN}-{slug}"[:253].rstrip("-.")
