"""The Redis key schema of mpush, written down in one place.

Queues are plain Redis lists named by the user. Producers ``LPUSH``, services take from the right,
so order is kept end to end.

Everything else lives under a *service namespace* ``NS`` (for example ``demo:mpush``)::

    NS:service:id          string  INCR counter handing out instance ids
    NS:service:<id>        hash    one live instance: service, host, pid, started, renewed, and the
                                   queues it works on; EXPIRE service_expire, renewed every
                                   service_renew seconds. DEL it to stop that instance.
    NS:service:ids         list    instance ids, newest first, trimmed to service_capacity entries
    NS:service:labels      hash    label → id of the live instance started with --service-label
                                   (rcontrol names its instances so); the instance's own entry is
                                   removed when it deregisters
    NS:service:<id>:activate list  a standby instance (--standby) BLPOPs it: one push activates it
    NS:metrics:<name>      hash    count, sum, max, histo0 … histo100 and plain counters
    NS:release:<release>:metrics:<name>
                           hash    the same, from the instances of one release only (those
                                   started with --service-release, as rcontrol starts them);
                                   EXPIRE 7 days after the last write
    NS:cache:dropped       stream  URLs an hgateway dropped from its response cache (a POST, PUT,
                                   PATCH or DELETE answered): h (host), p (path), q (query), by
                                   (instance); the other gateways drop them too. MAXLEN ~1000

Any list a service reads messages from (``L``) may gain one more list beside it::

    L:bad                  list    messages that could not be read (not JSON, not the contract),
                                   set aside: the newest 100

The web server (``HttpKeys``; docs/http-messages.md). Without a namespace each has a fixed
default, given after the arrow; a setting can rename each::

    NS:config              hash    hgateway's discovered settings (port, queue, timeout, …)
    NS:routes              list    hrouter's live routes, first match wins
    NS:reply:<instance>    list    one hgateway instance's reply list     → hgateway:reply:<random>
    NS:track:<request id>  string  a request in flight, for mdispatch      → mdispatch:req:<id>
                                   (JSON {reply, deadline, ts, route}; PXAT deadline + linger)
    NS:hfiler:<path>       hash    one file hfiler serves from Redis      → hfiler:<path>
    NS:templates           hash    hrender's templates kept in Redis      → hrender:templates

The request queue and the handlers' queues are lists the user names (``--queue``, ``--route``);
``mpush demo`` names them ``NS:req``, ``NS:pages``, ``NS:files``, ``NS:query``, ``NS:work`` and
``NS:control`` (``DemoKeys``), and keeps ``NS:site`` (a hash: what its page shows where).

Message tracking (``MessageKeys``, on the Redis of the queues; docs/tracking.md)::

    NS:message:id            string  INCR counter handing out message ids
    NS:message:xids          hash    xid → id of every unfinished tracked message; tracking
                                     pauses (counted) while it holds message_capacity entries
    NS:message:batch:<first> hash    what one atomic move registered for its messages first …
                                     first+count-1: count, pending, timestamp, deadline, timeout,
                                     expire, service, xids; with retry on also outs, bodies,
                                     max_deliveries, backoff, backoff_max
    NS:message:batches       zset    the first id of every live batch registration
    NS:message:<id>          hash    a message with a history of its own (timed out with retry
                                     on, failed, redelivered, dead): timestamp, deadline, xid,
                                     service, deliveries, state, …; EXPIRE once finished
    NS:message:due           zset    batch:<first> or <id> → when the monitor looks at it next (ms)
    NS:message:done          list    ids or xids pushed by consumers when they finish a message
    NS:message:dead          list    dead letters: JSON {id, xid, deliveries, reason, body, …}

A consumer of a queue (``ConsumerKeys``, ``mpush.consumer``) keeps, under the queue's hash tag (the
queue's own, or the whole queue name as one: ``{jobs}`` for ``jobs``)::

    Q:consumers              zset    consumer id → end of its lease (ms, Redis TIME)
    Q:inflight:<consumer>    list    the messages that consumer has claimed and not finished
    Q:failed                 list    messages that failed, when the queue is not tracked

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

ndeploy keeps its requests and responses under its namespace too (see ``NdeployKeys``); give it
a namespace of its own (``demo:ndeploy``), apart from the web server's::

    NS:req:id              string  INCR counter handing out request ids
    NS:req:<id>            hash    git, branch, commit, tag (the requester's); instance, step,
                                   attempts (ndeploy's)
    NS:req                 list    request ids waiting: requesters LPUSH, ndeploy takes the right
    NS:req:malformed       list    popped entries that were not request ids, set aside
    NS:inflight:<inst>     list    the ids instance <inst> has claimed (BLMOVE from NS:req)
    NS:inflight            set     instance ids that may hold an in-flight list
    NS:res:<id>            hash    the response: service, deployDir, cloned, installed,
                                   actualCommit, finished — or service, error, failedStep, finished
    NS:res:<id>:done       list    "ok" or "error", pushed with the response; the requester BLPOPs

rcontrol (docs/rcontrol.md) keeps the declared and the observed state of a namespace's processes
beside its registry (``RcontrolKeys``); on a Redis Cluster give the namespace a hash tag, so all of
them share one slot. *Authoritative* (written by ``rcontrol apply/scale/delete`` and by the active
controller only, each change one atomic step): the declarations and the assignments. *Derived*
(rewritten every heartbeat; losing them costs a heartbeat): hosts' heartbeats and instance
reports::

    NS:rcontrol:deployments        set     names of the declared deployments
    NS:rcontrol:deployment:<name>  hash    spec (canonical JSON of the declaration), replicas
                                           (the autoscaler's too), release (digest of what runs),
                                           generation, applied, autoscaled ("min..max" or ""),
                                           rollout (JSON {state, old, new, started, since, why,
                                           by}), previous and previous_release (the declaration
                                           a rollback restores)
    NS:rcontrol:assignments        hash    instance id (<deployment>-<n>) → JSON {deployment, host,
                                           role (active|standby), release, run, token, placed}
    NS:rcontrol:state              hash    token (fencing counter of the controller lease), epoch
                                           (random, made once: a Redis that lost its data has a
                                           new one), seq (last instance number handed out)
    NS:rcontrol:lease              string  "<token> <owner>" of the active controller; PX lease_ttl
    NS:rcontrol:events             stream  every decision: kind, deployment, instance, host, why,
                                           by; MAXLEN ~events_capacity
    NS:rcontrol:wake               list    pushed on a change the controller should see at once
                                           (apply, scale, delete, an instance's new state); the
                                           active controller BLPOPs it
    NS:rcontrol:hosts              zset    host → its last heartbeat (ms, Redis time)
    NS:rcontrol:host:<host>        hash    one live agent: capacity, labels, load1, mem_free,
                                           mem_total, cpus, pid, started, ttl, running,
                                           overloaded (why, when over --max-load/--max-memory);
                                           PEXPIRE its ttl
    NS:rcontrol:host:<host>:wake   list    pushed when the host's assignments change; its agent
                                           BLPOPs it
    NS:rcontrol:drained            hash    host → "<time> <by>": drained hosts get no instances
                                           and theirs move away (rcontrol drain / uncordon)
    NS:rcontrol:instance:<id>      hash    an instance as its agent reports it: host, state, pid,
                                           service_id, role, release, restarts, cpu, code,
                                           reason, since; EXPIRE a few heartbeats

The routing stages keep their shared state beside their input list ``IN``, so it takes the input's
hash tag and sits in the slot of the queues it is changed atomically with (each can be renamed by a
setting)::

    IN:mbalance:cursor       string  mbalance's round-robin cursor: the output tried first on a tie
    IN:mdedupe:seen:<xid>    string  mdedupe's seen marker, PX window: the xid passed recently
    IN:mthrottle:bucket      hash    mthrottle's token bucket {tokens, ts}; expires once full
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.crc import key_slot as _key_slot

from mpush.errors import ConfigError

__all__ = [
    "ACTIVATION_SUFFIX",
    "ConsumerKeys",
    "DemoKeys",
    "HttpKeys",
    "MessageKeys",
    "NdeployKeys",
    "RcontrolKeys",
    "ServiceKeys",
    "VpushKeys",
    "check_same_slot",
    "hash_tag",
    "key_slot",
    "keyed",
    "set_aside",
    "stage_key",
]


ACTIVATION_SUFFIX = ":activate"


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

    @property
    def labels(self) -> str:
        return f"{self.namespace}:service:labels"

    def activation(self, instance_id: int | str) -> str:
        """The list a standby instance waits on; ``ACTIVATION_SUFFIX`` after its registration."""
        return self.instance(instance_id) + ACTIVATION_SUFFIX

    def metrics(self, name: str) -> str:
        return f"{self.namespace}:metrics:{name}"

    def release_metrics(self, release: str, name: str) -> str:
        """The same figures as ``metrics(name)``, from the instances of one release only."""
        return f"{self.namespace}:release:{release}:metrics:{name}"

    @property
    def metrics_pattern(self) -> str:
        return f"{self.namespace}:metrics:*"

    @property
    def instance_prefix(self) -> str:
        """What every registration key starts with (``NS:service:``)."""
        return f"{self.namespace}:service:"

    @property
    def metrics_prefix(self) -> str:
        """What every metrics key starts with (``NS:metrics:``)."""
        return f"{self.namespace}:metrics:"

    @property
    def cache_dropped(self) -> str:
        return f"{self.namespace}:cache:dropped"


@dataclass(frozen=True)
class MessageKeys:
    """Keys of message tracking under one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        """What ``<id>`` and ``xid:<xid>`` are appended to (inside the Lua scripts)."""
        return f"{self.namespace}:message:"

    @property
    def counter(self) -> str:
        return f"{self.prefix}id"

    @property
    def xids(self) -> str:
        return f"{self.prefix}xids"

    @property
    def batches(self) -> str:
        return f"{self.prefix}batches"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    @property
    def done(self) -> str:
        return f"{self.prefix}done"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    def message(self, message_id: int | str) -> str:
        return f"{self.prefix}{message_id}"

    def batch(self, first: int | str) -> str:
        return f"{self.prefix}batch:{first}"

    def metrics(self, name: str) -> str:
        return f"{self.namespace}:metrics:{name}"

    @property
    def fixed(self) -> tuple[str, ...]:
        """The keys the tracking scripts name (for the Cluster slot check)."""
        metrics = ("done", "timeout", "failed", "retry", "dead")
        return (
            self.counter,
            self.xids,
            self.batches,
            self.due,
            self.done,
            self.dead,
            *(self.metrics(name) for name in metrics),
        )


@dataclass(frozen=True)
class ConsumerKeys:
    """Keys of the reliable consumers of one queue; all in the queue's hash slot."""

    queue: str

    @property
    def base(self) -> str:
        """The queue's name if it has a hash tag, else the whole name as the tag."""
        return self.queue if hash_tag(self.queue) is not None else "{" + self.queue + "}"

    @property
    def consumers(self) -> str:
        return f"{self.base}:consumers"

    def inflight(self, consumer: str) -> str:
        return f"{self.base}:inflight:{consumer}"

    @property
    def failed(self) -> str:
        return f"{self.base}:failed"


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


@dataclass(frozen=True)
class NdeployKeys:
    """ndeploy's request queue, claims and responses under one namespace."""

    namespace: str

    @property
    def queue(self) -> str:
        return f"{self.namespace}:req"

    @property
    def counter(self) -> str:
        return f"{self.namespace}:req:id"

    def request(self, request_id: int | str) -> str:
        return f"{self.namespace}:req:{request_id}"

    @property
    def malformed(self) -> str:
        return f"{self.namespace}:req:malformed"

    @property
    def holders(self) -> str:
        return f"{self.namespace}:inflight"

    def inflight(self, instance_id: int | str) -> str:
        return f"{self.namespace}:inflight:{instance_id}"

    def response(self, request_id: int | str) -> str:
        return f"{self.namespace}:res:{request_id}"

    def done(self, request_id: int | str) -> str:
        return f"{self.namespace}:res:{request_id}:done"


@dataclass(frozen=True)
class RcontrolKeys:
    """rcontrol's declared and observed state under one namespace (see the layout above)."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:rcontrol:"

    @property
    def deployments(self) -> str:
        return f"{self.prefix}deployments"

    def deployment(self, name: str) -> str:
        return f"{self.prefix}deployment:{name}"

    @property
    def assignments(self) -> str:
        return f"{self.prefix}assignments"

    @property
    def state(self) -> str:
        return f"{self.prefix}state"

    @property
    def lease(self) -> str:
        return f"{self.prefix}lease"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def wake(self) -> str:
        return f"{self.prefix}wake"

    @property
    def hosts(self) -> str:
        return f"{self.prefix}hosts"

    def host(self, name: str) -> str:
        return f"{self.prefix}host:{name}"

    def host_wake(self, name: str) -> str:
        return f"{self.prefix}host:{name}:wake"

    def instance(self, instance_id: str) -> str:
        return f"{self.prefix}instance:{instance_id}"

    @property
    def drained(self) -> str:
        return f"{self.prefix}drained"

    @property
    def fixed(self) -> tuple[str, ...]:
        """The keys every controller step may touch with the registry's (for the slot check)."""
        registry = ServiceKeys(self.namespace)
        return (
            self.deployments,
            self.assignments,
            self.state,
            self.lease,
            self.events,
            self.wake,
            self.hosts,
            self.drained,
            registry.labels,
            registry.instance(1),
        )


def stage_key(source: str, service: str, name: str) -> str:
    """The default key of a stage's shared state: ``<source>:<service>:<name>``.

    Built on the input list's name so it carries the same hash tag (the same Cluster slot).
    """
    return f"{source}:{service}:{name}"


def set_aside(source: str) -> str:
    """``<list>:bad``: where messages of ``source`` that could not be read are kept."""
    return f"{source}:bad"


def keyed(prefix: str, name: int | str) -> str:
    """``<prefix>:<name>``: one key of a family a setting names by its prefix (reply lists by
    instance, registrations by request id, hfiler's files by path)."""
    return f"{prefix}:{name}"


@dataclass(frozen=True)
class HttpKeys:
    """The web server's keys under a namespace, or their fixed defaults without one."""

    namespace: str | None

    def _under(self, suffix: str, fallback: str) -> str:
        return f"{self.namespace}:{suffix}" if self.namespace else fallback

    @property
    def config(self) -> str | None:
        return f"{self.namespace}:config" if self.namespace else None

    @property
    def routes(self) -> str | None:
        return f"{self.namespace}:routes" if self.namespace else None

    @property
    def reply_prefix(self) -> str:
        return self._under("reply", "hgateway:reply")

    @property
    def track_prefix(self) -> str:
        return self._under("track", "mdispatch:req")

    @property
    def files_prefix(self) -> str:
        return self._under("hfiler", "hfiler")

    @property
    def templates(self) -> str:
        return self._under("templates", "hrender:templates")


@dataclass(frozen=True)
class DemoKeys:
    """The lists ``mpush demo`` names under its namespace: the web server's queues, the site's
    Redis data and the live pipeline's lists (one hash tag, one Cluster slot)."""

    namespace: str

    @property
    def requests(self) -> str:
        return f"{self.namespace}:req"

    @property
    def pages(self) -> str:
        return f"{self.namespace}:pages"

    @property
    def files(self) -> str:
        return f"{self.namespace}:files"

    @property
    def query(self) -> str:
        return f"{self.namespace}:query"

    @property
    def work(self) -> str:
        """The slow handler's queue, where the demo's load goes."""
        return f"{self.namespace}:work"

    @property
    def control(self) -> str:
        """The queue of the demo's control requests (``/control/…``), served by ``mpush demo``."""
        return f"{self.namespace}:control"

    @property
    def site(self) -> str:
        return f"{self.namespace}:site"

    @property
    def live(self) -> str:
        """The prefix of the live pipeline's lists: ``NS:{live}:``."""
        return f"{self.namespace}:{{live}}:"

    def ring(self, name: str) -> str:
        """One list of the live pipeline: ``NS:{live}:<name>``."""
        return f"{self.live}{name}"
