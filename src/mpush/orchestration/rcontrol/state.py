"""rcontrol's state as read from Redis: declarations, assignments, hosts and instance reports.

Authoritative: the declarations (``Declaration``, written by apply/scale/delete) and the
assignments (``Assignment``, written by the active controller only, each change one fenced Lua
step). Derived: ``Host`` (an agent's heartbeat) and ``Report`` (an agent's view of one
instance), rewritten every heartbeat. Readers survive any bytes: an entry that does not decode is
``None`` (an unreadable assignment is retired like an orphan), never an exception.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mpush.orchestration.rcontrol.spec import Deployment, Run

__all__ = [
    "ACTIVE",
    "ALIVE_STATES",
    "SETTLED",
    "STANDBY",
    "Assignment",
    "Declaration",
    "Host",
    "Placed",
    "Report",
    "Rollout",
    "Snapshot",
    "State",
    "number",
]

log = logging.getLogger(__name__)

ACTIVE: Literal["active"] = "active"
STANDBY: Literal["standby"] = "standby"


class State(StrEnum):
    """An instance's state as its agent reports it (``pending``: no report yet)."""

    PENDING = "pending"  # assigned; its agent has not reported it yet
    BUILDING = "building"  # its release (a git source) is being built by ndeploy on its host
    STARTING = "starting"  # its process runs; not registered yet
    READY = "ready"  # registered and working (a command: running)
    STANDBY = "standby"  # registered, waiting to be activated
    BACKOFF = "backoff"  # exited; restarted after a backoff delay
    FAILING = "failing"  # crashed failing_after times in a row; still restarted, backed off
    EXITED = "exited"  # exited with a code a restart cannot fix (2): not restarted
    STOPPING = "stopping"  # no longer assigned; shutting down gracefully
    LOST = "lost"  # its host is dead


# States in which the instance's process is running.
ALIVE_STATES = frozenset({State.STARTING, State.READY, State.STANDBY, State.STOPPING})


class Assignment(BaseModel):
    """One instance as the controller assigned it (a value of ``NS:rcontrol:assignments``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    deployment: str
    host: str
    role: Literal["active", "standby"]
    release: str
    run: Run
    token: int = 0  # the fencing token of the controller that wrote it
    placed: float = 0.0  # Redis time of the placement: tells two placements of one id apart

    def encode(self) -> str:
        return self.model_dump_json()

    def with_role(self, role: Literal["active", "standby"]) -> Assignment:
        return self.model_copy(update={"role": role})


@dataclass(frozen=True)
class Placed:
    """An entry of the assignments hash: its id, its exact text (for compare-and-set), and what
    it decodes to (None: unreadable)."""

    id: str
    raw: str
    assignment: Assignment | None

    @classmethod
    def decode(cls, instance_id: str, raw: str) -> Placed:
        try:
            return cls(instance_id, raw, Assignment.model_validate_json(raw))
        except ValidationError:
            log.warning("unreadable assignment %s: %.80r", instance_id, raw)
            return cls(instance_id, raw, None)

    @property
    def seq(self) -> int:
        """The number after the deployment's name (``web-12`` → 12), for "newest first"."""
        tail = self.id.rpartition("-")[2]
        return int(tail) if tail.isdigit() else 0


RolloutState = Literal["progressing", "verifying", "complete", "rolling-back", "rolled-back"]
# A rollout in one of these states is over: its release is the one to come back to.
SETTLED: frozenset[str] = frozenset({"complete", "rolled-back"})


class Rollout(BaseModel):
    """The rollout of a deployment from release ``old`` to ``new`` (the field ``rollout`` of its
    declaration): ``progressing`` while instances are replaced, ``verifying`` once all run the
    new release (its health still watched for ``verify`` seconds), then ``complete``; or
    ``rolling-back`` to ``new`` (the previous release, restored) and then ``rolled-back``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: RolloutState
    old: str
    new: str
    started: float  # Redis time the rollout (or the rollback) began
    since: float  # Redis time the state began
    why: str = ""
    by: str = ""

    def encode(self) -> str:
        return self.model_dump_json()

    def moved(self, state: RolloutState, now: float, why: str, by: str) -> Rollout:
        return self.model_copy(update={"state": state, "since": now, "why": why, "by": by})

    @property
    def watched(self) -> bool:
        """Its new release's health is judged (it may be rolled back)."""
        return self.state in ("progressing", "verifying")


@dataclass(frozen=True)
class Declaration:
    """One declared deployment as stored: its spec, its replicas (``scale`` and the autoscaler
    change only these), its release, how many times it changed, its rollout and the declaration
    to roll back to."""

    name: str
    deployment: Deployment
    replicas: int
    release: str
    generation: int
    spec: str  # the canonical JSON stored
    rollout: Rollout | None = None
    previous: str = ""  # the canonical JSON of the last settled declaration before this one
    previous_release: str = ""

    @classmethod
    def decode(cls, name: str, data: Mapping[str, str]) -> Declaration | None:
        try:
            deployment = Deployment.model_validate_json(data.get("spec", ""))
        except ValidationError:
            log.warning("unreadable declaration of %s", name)
            return None
        replicas = int(number(data.get("replicas"), deployment.replicas))
        rollout: Rollout | None = None
        if data.get("rollout"):
            try:
                rollout = Rollout.model_validate_json(data["rollout"])
            except ValidationError:
                log.warning("unreadable rollout of %s", name)
        return cls(
            name,
            deployment,
            max(0, replicas),
            data.get("release") or deployment.release,
            int(number(data.get("generation"), 0)),
            data.get("spec", ""),
            rollout,
            data.get("previous", ""),
            data.get("previous_release", ""),
        )


@dataclass(frozen=True)
class Host:
    """One agent's host: alive while its heartbeat key lives."""

    name: str
    alive: bool
    seen: float | None = None  # Redis time of its last heartbeat
    capacity: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    load1: float | None = None
    mem_free: int | None = None
    mem_total: int | None = None
    cpus: int | None = None
    pid: int | None = None
    ttl: float | None = None
    overloaded: str = ""  # why its agent says it is over its load or memory limit, if it is

    @classmethod
    def decode(cls, name: str, data: Mapping[str, str], seen: float | None) -> Host:
        if not data:
            return cls(name, alive=False, seen=seen)
        labels: dict[str, str] = {}
        for pair in data.get("labels", "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key:
                labels[key] = value
        return cls(
            name,
            alive=True,
            seen=seen,
            capacity=int(number(data.get("capacity"), 0)),
            labels=labels,
            load1=_maybe(data.get("load1")),
            mem_free=_maybe_int(data.get("mem_free")),
            mem_total=_maybe_int(data.get("mem_total")),
            cpus=_maybe_int(data.get("cpus")),
            pid=_maybe_int(data.get("pid")),
            ttl=_maybe(data.get("ttl")),
            overloaded=data.get("overloaded", ""),
        )


@dataclass(frozen=True)
class Report:
    """One instance as its agent last reported it."""

    id: str
    host: str = ""
    state: State = State.PENDING
    pid: int | None = None
    service_id: str = ""
    role: str = ""
    release: str = ""
    deployment: str = ""
    restarts: int = 0
    cpu: float = 0.0  # share of one core, averaged over the last seconds
    code: int | None = None  # the last exit code
    reason: str = ""  # the last line its log had when it last failed
    since: float | None = None  # Redis time the state began
    placed: float = 0.0  # which placement of the id this is about

    @classmethod
    def decode(cls, instance_id: str, data: Mapping[str, str]) -> Report | None:
        if not data:
            return None
        try:
            state = State(data.get("state", ""))
        except ValueError:
            return None
        return cls(
            instance_id,
            host=data.get("host", ""),
            state=state,
            pid=_maybe_int(data.get("pid")),
            service_id=data.get("service_id", ""),
            role=data.get("role", ""),
            release=data.get("release", ""),
            deployment=data.get("deployment", ""),
            restarts=int(number(data.get("restarts"), 0)),
            cpu=number(data.get("cpu"), 0.0),
            code=_maybe_int(data.get("code")),
            reason=data.get("reason", ""),
            since=_maybe(data.get("since")),
            placed=number(data.get("placed"), 0.0),
        )

    def fields(self) -> dict[str, str]:
        """The hash an agent writes."""
        return {
            "host": self.host,
            "state": self.state.value,
            "pid": "" if self.pid is None else str(self.pid),
            "service_id": self.service_id,
            "role": self.role,
            "release": self.release,
            "deployment": self.deployment,
            "restarts": str(self.restarts),
            "cpu": f"{self.cpu:.4f}",
            "code": "" if self.code is None else str(self.code),
            "reason": self.reason[:500],
            "since": "" if self.since is None else f"{self.since:.3f}",
            "placed": f"{self.placed:.6f}",
        }


@dataclass(frozen=True)
class Registration:
    """The registration of an instance's process, found through its label."""

    service_id: str
    pid: int | None
    standby: bool


# States the agent sees for itself (the process is not up): they win over a registration, which
# may outlive a process killed with -9 until it expires.
_AGENT_DECIDES = frozenset({State.BACKOFF, State.FAILING, State.EXITED, State.STOPPING})


@dataclass
class Snapshot:
    """Everything a reconcile (or ``rcontrol status``) reads at one moment (``now``: Redis time)."""

    now: float
    epoch: str | None
    declarations: dict[str, Declaration]
    assignments: dict[str, Placed]
    hosts: dict[str, Host]
    reports: dict[str, Report]
    labels: dict[str, str]  # instance id → the registration id of its running process
    seq: int = 0  # the last instance number handed out
    holder: str = ""  # "<token> <owner>" of the controller lease, if held
    registrations: dict[str, Registration] = field(default_factory=dict)  # by instance id
    drained: dict[str, str] = field(default_factory=dict)  # host → who drained it, and when

    def state(self, instance_id: str) -> State:
        """What an instance is now: its agent's report, corrected by its registration.

        The agent reports at its heartbeat; the registration shows at once that a process is
        registered (ready) or waiting (standby), or was activated. A registration of another
        process than the one reported (a previous one, killed) does not count.
        """
        report = self.report(instance_id)
        state = State.PENDING if report is None else report.state
        registration = self.registrations.get(instance_id)
        if registration is None or state in _AGENT_DECIDES:
            return state
        if report is not None and report.pid is not None and report.pid != registration.pid:
            return state
        return State.STANDBY if registration.standby else State.READY

    def report(self, instance_id: str) -> Report | None:
        """The report about the current placement of ``instance_id`` (not an older one's)."""
        report = self.reports.get(instance_id)
        placed = self.assignments.get(instance_id)
        if report is None or placed is None or placed.assignment is None:
            return report
        if report.placed and abs(report.placed - placed.assignment.placed) > 1e-3:
            return None
        return report


def number(raw: str | None, default: float) -> float:
    """``raw`` as a float, or ``default`` when it is missing or not a number."""
    value = _maybe(raw)
    return default if value is None else value


def _maybe(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _maybe_int(raw: str | None) -> int | None:
    value = _maybe(raw)
    return None if value is None else int(value)
