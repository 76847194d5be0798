"""The Redis key schema of mpush, written down in one place.

Queues are plain Redis lists named by the user. Producers ``LPUSH``, services take from the right,
so order is kept end to end.

Everything else lives under a *service namespace* ``NS`` (for example ``demo:mpush``)::

    NS:service:id          string  INCR counter handing out instance ids
    NS:service:<id>        hash    one live instance: service, host, pid, started, renewed, and the
                                   queues it works on; EXPIRE service_expire, renewed every
                                   service_renew seconds. DEL it to stop that instance.
    NS:service:ids         list    instance ids, newest first, trimmed to service_capacity entries
    NS:metrics:<name>      hash    count, sum, max, histo0 … histo100 and plain counters

vpush keeps its route state beside its queues, so it needs no namespace (``IN`` is the input list
on the source Redis, ``OUT`` the output list on the destination)::

    IN:vpush:lease         string  "<token> <owner>" of the active mover; PX lease_ttl, renewed
    IN:vpush:inflight      list    the claimed batch, oldest first, until the destination confirms
    IN:vpush:state         hash    epoch (random, made once), token (fencing counter), seq (last
                                   message id handed out), base (id of the in-flight batch's first
                                   message), claimed (ms time of its claim)
    OUT:vpush:<epoch>      hash    on the destination: token (highest fencing token seen), seq (last
                                   message id applied), fenced (writes refused); EXPIRE
                                   dedupe_window

On Redis Cluster every key of one atomic operation must hash to one slot. A namespace with a hash
tag, such as ``{demo}:mpush``, keeps all of a namespace's keys on one node; queue names take the
same tag (``{demo}:in``, ``{demo}:out0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.crc import key_slot as _key_slot

from mpush.errors import ConfigError

__all__ = ["ServiceKeys", "VpushKeys", "check_same_slot", "hash_tag", "key_slot"]


@dataclass(frozen=True)
class ServiceKeys:
    """Keys of the service registry and metrics under one namespace."""

    namespace: str

    @property
    def counter(self) -> str:
        return f"{self.namespace}:service:id"

    @property
    def ids(self) -> str:
        return f"{self.namespace}:service:ids"

    def instance(self, instance_id: int | str) -> str:
        return f"{self.namespace}:service:{instance_id}"

    def metrics(self, name: str) -> str:
        return f"{self.namespace}:metrics:{name}"

    @property
    def metrics_pattern(self) -> str:
        return f"{self.namespace}:metrics:*"


@dataclass(frozen=True)
class VpushKeys:
    """The route state of one vpush input list (source side) and output list (destination)."""

    input: str
    out: str

    @property
    def lease(self) -> str:
        return f"{self.input}:vpush:lease"

    @property
    def inflight(self) -> str:
        return f"{self.input}:vpush:inflight"

    @property
    def state(self) -> str:
        return f"{self.input}:vpush:state"

    @property
    def source(self) -> tuple[str, str, str, str]:
        """Every source key, for the slot check: lease, input, in-flight, state."""
        return (self.lease, self.input, self.inflight, self.state)

    def dedupe(self, epoch: str) -> str:
        return f"{self.out}:vpush:{epoch}"


def key_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (honouring ``{hash tags}``)."""
    return int(_key_slot(key.encode()))


def hash_tag(key: str) -> str | None:
    """The hash tag of ``key`` as Redis Cluster reads it, or None."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def check_same_slot(keys: Sequence[str], *, what: str = "an atomic move") -> None:
    """Raise ConfigError naming the keys and the fix when ``keys`` span several Cluster slots."""
    slots = {key: key_slot(key) for key in keys}
    if len(set(slots.values())) <= 1:
        return
    listing = ", ".join(f"{key} (slot {slot})" for key, slot in slots.items())
    tag = next((t for t in map(hash_tag, keys) if t), None) or "app"
    example = ", ".join(_with_tag(key, tag) for key in keys)
    raise ConfigError(
        "keys",
        f"{what} needs all its keys in one Redis Cluster hash slot, but {listing}. "
        f"Give them a common hash tag, e.g. {example}",
    )


def _with_tag(key: str, tag: str) -> str:
    current = hash_tag(key)
    if current is not None:
        return key.replace("{" + current + "}", "{" + tag + "}", 1)
    head, sep, tail = key.partition(":")
    return f"{{{tag}}}:{tail}" if sep and head == tag else f"{{{tag}}}:{key}"
